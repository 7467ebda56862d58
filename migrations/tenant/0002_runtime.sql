-- The runtime processes one sender's messages in order and coalesces a burst
-- into one turn, so the inbox records who sent each event.
ALTER TABLE inbox ADD COLUMN sender text NOT NULL DEFAULT '';
CREATE INDEX inbox_sender_pending ON inbox (sender, id) WHERE status IN ('pending', 'processing');

-- users.remote_jid holds the keyed hash of the channel address (a WhatsApp
-- address contains the phone number); the address itself is kept encrypted
-- for replies that start from our side (manager replies, reminders).
ALTER TABLE users ADD COLUMN address_encrypted bytea;

-- Prompts copied before platform migration 0003 carry a literal "\n".
UPDATE prompts SET text = replace(text, '\n', E'\n') WHERE position('\n' in text) > 0;
