-- Replies longer than a channel allows (Telegram 4,096 characters, Instagram
-- 1,000) are sent in parts; a retry goes on from the first part not sent, so
-- the customer never gets a part twice.
ALTER TABLE outbox ADD COLUMN parts_sent integer NOT NULL DEFAULT 0;
