-- Portable between SQLite and PostgreSQL: ids come from the application (uuid hex, Discord
-- snowflakes), times are epoch seconds from the application's clock, booleans are 0/1.

-- One row per /imagine (or reroll, upscale...): the durable job lifecycle.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                    -- txt2img | upscale
    state TEXT NOT NULL,                   -- queued | submitting | submitted | delivering | done | failed
    charge TEXT NOT NULL,                  -- reserved | committed | released
    cost BIGINT NOT NULL,                  -- credit units held for this job
    guild_id BIGINT,
    channel_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    request TEXT NOT NULL,                 -- JSON: what Omniinfer is asked for
    age_restricted INTEGER NOT NULL DEFAULT 0,
    sandbox INTEGER NOT NULL DEFAULT 0,
    parent_job_id TEXT,                    -- the job a reroll/upscale came from
    task_id TEXT,                          -- set once Omniinfer accepted the job
    application_id BIGINT,
    interaction_token TEXT,                -- answers go to the original reply while valid
    token_expires_at DOUBLE PRECISION,
    upload_limit BIGINT,                   -- bytes per upload the guild allows
    message_id BIGINT,                     -- the reply (or channel message) showing the job
    result TEXT,                           -- JSON: seeds and parameters really used
    failure TEXT,                          -- failure kind when state = failed
    failure_detail TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
CREATE INDEX jobs_by_message ON jobs (message_id);

-- The Omniinfer account's budget, in credit units (images by default). One row, id = 1.
CREATE TABLE account (
    id INTEGER PRIMARY KEY,
    credit BIGINT NOT NULL,                -- what the account had when last set
    spent BIGINT NOT NULL DEFAULT 0,       -- committed since then
    reserved BIGINT NOT NULL DEFAULT 0,    -- held by unfinished jobs
    paused_reason TEXT,                    -- set when Omniinfer said "out of credit"
    updated_at DOUBLE PRECISION NOT NULL
);

-- Limits: a value per (guild, scope, field). scope_kind: guild | role | user.
CREATE TABLE limit_rules (
    guild_id BIGINT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_id BIGINT NOT NULL,
    field TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (guild_id, scope_kind, scope_id, field)
);

-- One-off extra images for a member, used up before their daily allowance.
CREATE TABLE grants (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    images BIGINT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE bans (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    banned_by BIGINT NOT NULL,
    banned_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE blocklist (
    guild_id BIGINT NOT NULL,
    word TEXT NOT NULL,
    PRIMARY KEY (guild_id, word)
);

CREATE TABLE guild_settings (
    guild_id BIGINT PRIMARY KEY,
    modlog_channel_id BIGINT,
    gallery_channel_id BIGINT
);

-- Every moderator change: who, what, before, after, when.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    guild_id BIGINT,
    actor_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    before_value TEXT,
    after_value TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX audit_by_guild ON audit_log (guild_id, at);
