-- The audit log is read newest first by `id`, which is the table's rowid:
-- SQLite walks the table itself backwards for that. The index on `id` only
-- doubled the work of every audit insert.
DROP INDEX IF EXISTS audit_by_time;
