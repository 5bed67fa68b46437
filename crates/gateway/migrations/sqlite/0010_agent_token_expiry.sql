-- Agent tokens expire, and a rotated token stays valid for an overlap the
-- administrator chooses. Times are Unix seconds; tokens are kept only as
-- digests.
ALTER TABLE agents ADD COLUMN token_expires_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN previous_token_digest BLOB;
ALTER TABLE agents ADD COLUMN previous_token_expires_at INTEGER;
-- Tokens issued before tokens expired get the default lifetime (90 days)
-- from the upgrade, so no desk breaks the day it is installed.
UPDATE agents SET token_expires_at = CAST(strftime('%s', 'now') AS INTEGER) + 7776000;
CREATE UNIQUE INDEX agents_previous_token ON agents(previous_token_digest);
