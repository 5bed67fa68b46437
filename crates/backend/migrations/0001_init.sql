-- The reference backend's tables. Secrets are stored only as keyed digests.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    customer_id   TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);

CREATE TABLE profiles (
    user_id      INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    email        TEXT NOT NULL,
    phone        TEXT NOT NULL,
    tier         TEXT NOT NULL,
    member_since TEXT NOT NULL
);

CREATE TABLE accounts (
    id       TEXT PRIMARY KEY,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    status   TEXT NOT NULL,
    amount   TEXT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX accounts_by_user ON accounts(user_id);

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    secret_digest BLOB NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_digest BLOB PRIMARY KEY,
    label      TEXT NOT NULL,
    apis       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE sessions (
    session_digest BLOB PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
