-- Cards and account transactions (the demo's data for actions), and the
-- answers of writes kept by idempotency key.
CREATE TABLE cards (
    id           TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    brand        TEXT NOT NULL,
    last4        TEXT NOT NULL,
    status       TEXT NOT NULL,
    block_reason TEXT,
    blocked_at   INTEGER
);
CREATE INDEX cards_by_user ON cards(user_id);

CREATE TABLE transactions (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    booked_at         INTEGER NOT NULL,
    amount            TEXT NOT NULL,
    currency          TEXT NOT NULL,
    description       TEXT NOT NULL,
    status            TEXT NOT NULL,
    counterparty_iban TEXT
);
-- Pages are read newest first by (booked_at, id).
CREATE INDEX transactions_by_account ON transactions(account_id, booked_at DESC, id DESC);

-- One row per (client, customer, key): what the request asked for and,
-- once the write is done, its answer. A key is kept 24 h.
CREATE TABLE idempotency_keys (
    client_id   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    request     TEXT NOT NULL,
    status      INTEGER,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, customer_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_at);
