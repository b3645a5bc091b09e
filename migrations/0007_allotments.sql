-- Per-server allotments: the bot's operator caps what one server's members may draw from the
-- account's credit (shared by every server) in a calendar day or month, UTC.

CREATE TABLE guild_allotments (
    guild_id BIGINT PRIMARY KEY,
    images BIGINT NOT NULL,                -- images the server's members may use per period
    period TEXT NOT NULL,                  -- day | month
    set_by BIGINT NOT NULL,                -- the operator who set it
    set_at DOUBLE PRECISION NOT NULL
);

-- A server's use in a period is the cost of its counted jobs since the period began.
CREATE INDEX jobs_by_guild ON jobs (guild_id, created_at);
