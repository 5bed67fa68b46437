-- What the identity provider's back-channel logout names: the agent's
-- subject (`sub`) and the provider's session (`sid`) of each sign-in.
ALTER TABLE console_idp_sessions ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE console_idp_sessions ADD COLUMN sid TEXT;
CREATE INDEX console_idp_sessions_subject ON console_idp_sessions(subject);
CREATE INDEX console_idp_sessions_sid ON console_idp_sessions(sid);
