-- Every access token of a client issued before this instant (epoch ms) is revoked.
ALTER TABLE clients ADD COLUMN tokens_not_before_ms INTEGER;
