-- Small facts the bot keeps about itself between starts (e.g. where commands were synced).
CREATE TABLE IF NOT EXISTS app_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
