-- Community sharing: one gallery post per job, one vote per member per job.

ALTER TABLE jobs ADD COLUMN deleted_at DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN upscale_index INTEGER;      -- for upscale jobs: which image

CREATE TABLE gallery_posts (
    job_id TEXT PRIMARY KEY,               -- a job is shared at most once
    guild_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    message_id BIGINT,                     -- NULL while the post is being made
    shared_by BIGINT NOT NULL,
    shared_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX gallery_by_guild ON gallery_posts (guild_id, shared_at);

CREATE TABLE votes (
    job_id TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    voted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, user_id)
);
