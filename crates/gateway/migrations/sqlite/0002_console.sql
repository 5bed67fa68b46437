-- Agents may sign in to the console with a password (Argon2id PHC string).
ALTER TABLE agents ADD COLUMN password_hash TEXT;

-- Console sign-ins. The cookie's value is never stored: only its SHA-256.
CREATE TABLE console_sessions (
    digest     BLOB PRIMARY KEY,
    agent      TEXT NOT NULL REFERENCES agents(name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_agent ON console_sessions(agent);
