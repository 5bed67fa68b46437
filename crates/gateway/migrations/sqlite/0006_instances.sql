-- The gateway processes serving from this store: each registers itself at
-- start, beats every few seconds and deregisters on a clean shutdown. One
-- whose beat is old is gone (killed, or its machine lost).
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
