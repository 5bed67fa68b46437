-- Console sessions of agents who signed in at the company's identity
-- provider ([console.oidc]), as SQLite's 0011: no row in `agents`, so the
-- session keeps the name and role from the claims at sign-in, and the ID
-- token (sealed by the token key) for the provider's logout.
CREATE TABLE console_idp_sessions (
    digest     BYTEA PRIMARY KEY,
    agent      TEXT NOT NULL,
    role       TEXT NOT NULL,
    id_token   BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_idp_sessions_expiry ON console_idp_sessions(expires_at);
