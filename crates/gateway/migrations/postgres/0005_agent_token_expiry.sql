-- Agent tokens expire, and a rotated token stays valid for an overlap the
-- administrator chooses (as SQLite's 0009). Times are Unix seconds; tokens
-- are kept only as digests.
ALTER TABLE agents ADD COLUMN token_expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN previous_token_digest BYTEA;
ALTER TABLE agents ADD COLUMN previous_token_expires_at BIGINT;
-- Tokens issued before tokens expired get the default lifetime (90 days)
-- from the upgrade, so no desk breaks the day it is installed.
UPDATE agents SET token_expires_at = EXTRACT(EPOCH FROM now())::BIGINT + 7776000;
ALTER TABLE agents ALTER COLUMN token_expires_at DROP DEFAULT;
CREATE UNIQUE INDEX agents_previous_token ON agents(previous_token_digest);
