-- One tenant's operational data. Runs with search_path set to the tenant's
-- schema, so names are unqualified; the tenant's login role gets DML only.

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'telegram', 'instagram')),
    -- Channel address: WhatsApp remoteJid, Telegram chat id, Instagram scoped id.
    remote_jid      text NOT NULL,
    -- Keyed hash for lookup and ciphertext for display; never the plain number.
    phone_hash      text,
    phone_encrypted bytea,
    name            text,
    language        text CHECK (language IN ('ru', 'kk', 'en')),
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_active_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, remote_jid)
);
CREATE INDEX users_phone_hash ON users (phone_hash);

CREATE TABLE conversations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'telegram', 'instagram')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed', 'handover')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);
-- At most one open conversation per user and channel.
CREATE UNIQUE INDEX conversations_one_open ON conversations (user_id, channel) WHERE status <> 'closed';

CREATE TABLE messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'manager')),
    content         text,
    intent          text,
    confidence      real CHECK (confidence BETWEEN 0 AND 1),
    language        text,
    -- The channel's message id (ChatFlow messageId) for inbound messages.
    external_id     text UNIQUE,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX messages_conversation_time ON messages (conversation_id, created_at);

-- Webhook events are stored here before the webhook is acknowledged (ACK-first).
-- The unique message id is the deduplication fallback when Redis is down.
CREATE TABLE inbox (
    id              bigserial PRIMARY KEY,
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'telegram', 'instagram')),
    message_id      text NOT NULL UNIQUE,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'failed', 'ignored')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX inbox_due ON inbox (next_attempt_at) WHERE status IN ('pending', 'processing');

-- Replies waiting to be sent; the idempotency key is sent to the channel (msg_id).
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    conversation_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      uuid REFERENCES messages (id) ON DELETE CASCADE,
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'telegram', 'instagram')),
    recipient       text NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status IN ('pending', 'sending');

CREATE TABLE handovers (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id    uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    trigger_type       text NOT NULL CHECK (trigger_type IN ('intent', 'keyword', 'manual', 'timeout', 'error')),
    trigger_value      text,
    context_summary    text,
    adapter_type       text NOT NULL,
    adapter_response   jsonb,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'notified', 'active', 'resolved', 'timeout')),
    manager_id         text,
    manager_name       text,
    -- Adapter-side handle: Telegram topic id, CRM lead id, ...
    external_ref       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    notified_at        timestamptz,
    first_response_at  timestamptz,
    resolved_at        timestamptz,
    resolution_type    text CHECK (resolution_type IN ('solved', 'transferred', 'spam', 'other')),
    resolution_notes   text
);
-- One open handover per conversation: reuse it, never duplicate.
CREATE UNIQUE INDEX handovers_one_open ON handovers (conversation_id) WHERE status IN ('pending', 'notified', 'active');

CREATE TABLE documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source        text NOT NULL CHECK (source IN ('config_map', 'url', 'upload', 'google_drive', 'api')),
    source_name   text NOT NULL,
    source_id     text NOT NULL,
    filename      text NOT NULL,
    mime_type     text,
    content_hash  text NOT NULL,
    doc_type      text NOT NULL DEFAULT 'custom' CHECK (doc_type IN ('faq', 'case', 'policy', 'pricing', 'custom')),
    point_ids     uuid[] NOT NULL DEFAULT '{}',
    chunk_count   integer NOT NULL DEFAULT 0,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'indexed', 'failed', 'deleted')),
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    indexed_at    timestamptz,
    deleted_at    timestamptz,
    UNIQUE (source_name, source_id)
);

-- The tenant's prompts: copied from the global templates at onboarding, plus overrides.
CREATE TABLE prompts (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    text        text NOT NULL,
    model       text,
    temperature real CHECK (temperature BETWEEN 0 AND 2),
    version     integer NOT NULL DEFAULT 1,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
CREATE UNIQUE INDEX prompts_one_active ON prompts (name) WHERE is_active;

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    action     text NOT NULL CHECK (action IN ('message_in', 'message_out', 'handover', 'error', 'config_change', 'knowledge_sync', 'gdpr')),
    actor      text NOT NULL CHECK (actor IN ('system', 'user', 'admin', 'manager')),
    actor_id   text,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_time ON audit_log (created_at);

CREATE TABLE error_logs (
    id          bigserial PRIMARY KEY,
    stage       text NOT NULL,
    level       text NOT NULL CHECK (level IN ('critical', 'warning', 'info')),
    error_type  text NOT NULL,
    message     text NOT NULL,
    stack       text,
    -- The input that failed, so it can be replayed.
    input_data  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX error_logs_time ON error_logs (created_at);
