-- Each member's own defaults for `/imagine`, per server (`/settings`): one row per option
-- set, the value as JSON (a number or a string), checked like `/imagine`'s options.
CREATE TABLE member_defaults (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    option TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, user_id, option)
);
