-- The gateway's tables. Customer tokens are stored encrypted (AES-256-GCM)
-- and deleted once expired; agent tokens only as digests.
CREATE TABLE conversations (
    id               TEXT PRIMARY KEY,
    connection       TEXT NOT NULL,
    customer_key     TEXT,
    created_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    UNIQUE (connection, customer_key)
);
CREATE INDEX conversations_by_activity ON conversations(last_activity_at DESC, id);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    channel         TEXT NOT NULL,
    authenticated   INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX sessions_by_conversation ON sessions(conversation_id);

CREATE TABLE customer_tokens (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id),
    ciphertext      BLOB NOT NULL,
    expires_at      INTEGER,
    rejected        INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    session_id      TEXT,
    kind            TEXT NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX events_by_conversation ON events(conversation_id, id);

CREATE TABLE agents (
    name         TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    token_digest BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
);

CREATE TABLE audit (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    agent           TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    connection      TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    status          INTEGER,
    latency_ms      INTEGER NOT NULL
);
CREATE INDEX audit_by_time ON audit(id DESC);
