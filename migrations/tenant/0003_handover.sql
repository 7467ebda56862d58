-- Handover notifications to managers (cards, forwarded customer messages,
-- reminders, delivery failures, closing notes) are queued durably and sent
-- in order per handover, with retries, like the customer outbox.
CREATE TABLE manager_outbox (
    id               bigserial PRIMARY KEY,
    handover_id      uuid NOT NULL REFERENCES handovers (id) ON DELETE CASCADE,
    kind             text NOT NULL
                     CHECK (kind IN ('card', 'customer_message', 'delivery_failed', 'reminder', 'closed')),
    body             jsonb NOT NULL DEFAULT '{}',
    idempotency_key  text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX manager_outbox_due ON manager_outbox (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX manager_outbox_handover ON manager_outbox (handover_id, id);

-- Reminders sent to managers about a handover nobody took (30 and 60 minutes).
ALTER TABLE handovers ADD COLUMN reminders_sent integer NOT NULL DEFAULT 0;
-- The customer's language, for the context summary and the closing phrase.
ALTER TABLE handovers ADD COLUMN language text;
CREATE INDEX handovers_external_ref ON handovers (external_ref) WHERE external_ref IS NOT NULL;

