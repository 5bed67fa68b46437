-- Console sessions of agents who signed in at the company's identity
-- provider ([console.oidc]): they have no row in `agents`, so the session
-- keeps the name and the role their claims gave at sign-in, and their ID
-- token (sealed by the token key) for the provider's logout.
CREATE TABLE console_idp_sessions (
    digest     BLOB PRIMARY KEY,
    agent      TEXT NOT NULL,
    role       TEXT NOT NULL,
    id_token   BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_idp_sessions_expiry ON console_idp_sessions(expires_at);
