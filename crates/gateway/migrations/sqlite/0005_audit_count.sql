-- How many requests a record stands for: 1 for an action, the number in
-- the window for a repeated refusal (an unknown action, an open breaker,
-- a rate limit), which is counted rather than written once per request.
ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
