-- Privacy: when a job's texts (prompt, negative prompt, start image, interaction token) were
-- erased, by Delete, `/privacy forget` or the retention sweep. The row keeps its counts (the
-- limits and the ledger read them); NULL means the texts are still there.
ALTER TABLE jobs ADD COLUMN texts_erased_at DOUBLE PRECISION;
CREATE INDEX jobs_by_finished_texts ON jobs (texts_erased_at, finished_at);
