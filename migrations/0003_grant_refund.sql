-- A job remembers the one-off grant images it used, so a job that fails uncharged gives
-- them back along with its reservation.

ALTER TABLE jobs ADD COLUMN grant_used BIGINT NOT NULL DEFAULT 0;
