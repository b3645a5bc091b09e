-- A job's further messages are Discord follow-up messages: name the column so.
ALTER TABLE jobs RENAME COLUMN more_message_ids TO followup_message_ids;
