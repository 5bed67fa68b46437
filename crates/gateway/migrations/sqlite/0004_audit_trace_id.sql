-- The W3C trace id of the request that ran the action (x-trace-id on its
-- answer, the trace of the traceparent sent to the company). NULL on
-- records written before this column.
ALTER TABLE audit ADD COLUMN trace_id TEXT;
