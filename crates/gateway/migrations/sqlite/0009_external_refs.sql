-- The desk's own ids for a conversation (its chat or ticket id): many per
-- conversation (one customer, many tickets), each naming one conversation
-- per connection. `bound_by` says who named it: `channel:<name>` or
-- `agent:<name>`.
CREATE TABLE external_refs (
    connection      TEXT NOT NULL,
    external_ref    TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    bound_by        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (connection, external_ref)
);
-- A lookup without a connection, and a conversation's own refs.
CREATE INDEX external_refs_by_ref ON external_refs(external_ref);
CREATE INDEX external_refs_by_conversation ON external_refs(conversation_id);
