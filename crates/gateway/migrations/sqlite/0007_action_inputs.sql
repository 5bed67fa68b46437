-- Actions with inputs, writes and callers other than agents.
ALTER TABLE audit ADD COLUMN caller TEXT NOT NULL DEFAULT 'agent';
-- The input's field names (a JSON array) and a keyed digest of its values:
-- never the values themselves.
ALTER TABLE audit ADD COLUMN input_fields TEXT;
ALTER TABLE audit ADD COLUMN input_digest TEXT;
-- A reveal: the pointer shown unmasked, and the reason the agent gave.
ALTER TABLE audit ADD COLUMN revealed TEXT;
ALTER TABLE audit ADD COLUMN reason TEXT;

-- The first outcome of each write, by its caller's Idempotency-Key.
CREATE TABLE idempotency (
    conversation_id TEXT NOT NULL,
    action          TEXT NOT NULL,
    key             TEXT NOT NULL,
    input_digest    TEXT NOT NULL,
    -- NULL while the first request runs.
    status          INTEGER,
    -- The company's answer, sealed like a customer token.
    answer          BLOB,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, action, key)
);
CREATE INDEX idempotency_by_age ON idempotency(created_at);
