-- Requests acknowledged in Discord but not yet admitted or refused. A bot killed in between
-- leaves rows here; the next start tells those members instead of leaving "thinking…".

CREATE TABLE pending_interactions (
    interaction_id BIGINT PRIMARY KEY,
    application_id BIGINT NOT NULL,
    token TEXT NOT NULL,
    token_expires_at DOUBLE PRECISION NOT NULL,
    noted_at DOUBLE PRECISION NOT NULL
);

-- The start-up check asks, for each request left behind, whether a job carries its token.
CREATE INDEX jobs_by_interaction_token ON jobs (interaction_token);
