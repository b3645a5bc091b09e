-- Several bot processes on one database: each job and each noted request belongs to the
-- process that took it (its INSTANCE_ID), and each live process keeps a lease. A process
-- whose lease has expired is dead: a live one takes its jobs over. Rows from before this
-- migration have no owner (''), which no live lease names, so the next start takes them.
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE pending_interactions ADD COLUMN owner TEXT NOT NULL DEFAULT '';

CREATE TABLE leases (
    owner TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

-- One row that the step "is there room at the backend? then this job is submitting" locks,
-- so the cap on jobs at the backend holds across processes.
CREATE TABLE backend_slots (
    id INTEGER PRIMARY KEY
);
INSERT INTO backend_slots (id) VALUES (1);

CREATE INDEX jobs_by_state_owner ON jobs (state, owner);
