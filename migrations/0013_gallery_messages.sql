-- A shared result split over several messages is posted to the gallery over several messages
-- too: the first is `message_id` (embed and Vote button), the rest are listed here (JSON list
-- of ids, as jobs.followup_message_ids). `image_url` is the first image as Discord stores it,
-- shown by `/gallery top`.
ALTER TABLE gallery_posts ADD COLUMN followup_message_ids TEXT;
ALTER TABLE gallery_posts ADD COLUMN image_url TEXT;
