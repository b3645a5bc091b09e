-- One queue for every process: the next job is claimed from the database in the fair order
-- (jobs.store.claim_next), not from a queue held in each process's memory.
-- `turn`: the round a job waits in. A member's first waiting job joins the round being
-- served; each further one goes a round later, so members are served in turn.
-- `not_before`: a job the backend refused for now is not claimed again before this time.
-- `refusals`: how many submits of the job the backend refused (it is failed after many).
ALTER TABLE jobs ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN not_before DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;

CREATE INDEX jobs_in_queue_order ON jobs (state, turn, created_at);
CREATE INDEX jobs_by_member_state ON jobs (user_id, state, turn);  -- a member's next turn
-- Every change of a job's state rewrites each index holding the state (about 10 µs each on
-- SQLite): jobs_in_queue_order leads with the state, so these two add nothing for queries.
DROP INDEX jobs_by_state_owner;
DROP INDEX jobs_by_state;

-- The claim counts the cap in its own exclusive statement (storage: fetch_exclusive): the
-- row 0009 locked for it is no longer used.
DROP TABLE backend_slots;
