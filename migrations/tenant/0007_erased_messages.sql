-- The provider message ids of an erased person's webhooks, hashed (SHA-256):
-- a replay of an old webhook after the erasure is a duplicate, not a new
-- customer. Only the hash of the provider's id is kept: no number, no text.
CREATE TABLE erased_messages (
    message_hash text PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT now()
);
