-- Clients that prove themselves with a signed JWT (private_key_jwt, RFC 7523)
-- instead of a secret: their public key, as PEM. Such a client's
-- secret_digest is of a random secret nobody was given.
ALTER TABLE clients ADD COLUMN public_key TEXT;

-- The jti of each client assertion accepted, until it expires: a copy sent
-- again is refused (RFC 7523 §3, item 7).
CREATE TABLE client_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_by_expiry ON client_assertions(expires_at);
