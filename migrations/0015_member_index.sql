-- A member's jobs in one server (admission's look at them on every request: the cooldown's
-- last job, the images of the last day; /history) are read by member and server together.
-- jobs_by_user (user_id, created_at) left SQLite's planner free to search the server's index
-- instead, so each admission read the whole server's day of jobs. This index serves those
-- reads alone, and everything jobs_by_user served (it leads with the same column).
DROP INDEX jobs_by_user;
CREATE INDEX jobs_by_member ON jobs (user_id, guild_id, created_at);

-- No query looks a job up by its message (buttons carry the job id): the index only cost a
-- write at each insert and each delivery.
DROP INDEX jobs_by_message;
