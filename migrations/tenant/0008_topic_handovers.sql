-- A handover by topic (handover.topics: payment, booking changes, medical
-- questions, complaints, order status) is its own trigger, so managers and
-- reports can tell it from an intent or a keyword.
ALTER TABLE handovers DROP CONSTRAINT handovers_trigger_type_check;
ALTER TABLE handovers ADD CONSTRAINT handovers_trigger_type_check
    CHECK (trigger_type IN ('intent', 'keyword', 'topic', 'manual', 'timeout', 'error'));
