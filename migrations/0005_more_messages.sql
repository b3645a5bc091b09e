-- When a job's images do not fit in one message, the rest follow in more messages; their ids
-- (a JSON list) let Delete remove them all and Upscale find any image.

ALTER TABLE jobs ADD COLUMN more_message_ids TEXT;
