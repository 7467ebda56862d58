-- Platform schema: what the operator, billing and reporting need across tenants.
-- Tenant runtimes have no privileges here; their data lives in their own schema.
CREATE SCHEMA IF NOT EXISTS platform;
REVOKE ALL ON SCHEMA platform FROM PUBLIC;

CREATE TABLE platform.clients (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- TrufflesClient metadata.name; names the schema and the vector collection.
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$'),
    namespace    text NOT NULL,
    company_name text NOT NULL,
    status       text NOT NULL DEFAULT 'onboarding'
                 CHECK (status IN ('onboarding', 'active', 'suspended', 'deleted')),
    schema_name  text NOT NULL UNIQUE,
    -- Non-secret rendered configuration (the spec); secrets stay in Kubernetes.
    config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);

CREATE TABLE platform.subscriptions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id            uuid NOT NULL REFERENCES platform.clients (id),
    plan                 text NOT NULL,
    price_amount         bigint NOT NULL CHECK (price_amount >= 0),
    currency             text NOT NULL DEFAULT 'KZT' CHECK (currency IN ('KZT', 'RUB', 'USD')),
    period_months        integer NOT NULL DEFAULT 1 CHECK (period_months > 0),
    state                text NOT NULL DEFAULT 'trial'
                         CHECK (state IN ('trial', 'active', 'past_due', 'suspended', 'cancelled')),
    trial_ends_on        date,
    paid_until           date,
    current_period_start date,
    current_period_end   date,
    suspended_since      timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id)
);

-- Billing history is kept after a client is deleted (SPEC: archive).
CREATE TABLE platform.billing_reminders (
    id              bigserial PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES platform.subscriptions (id),
    type            text NOT NULL CHECK (type IN ('trial_ending', 'payment_due', 'past_due', 'final_warning')),
    due_on          date NOT NULL,
    period_end      date NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    sent_via        text NOT NULL CHECK (sent_via IN ('telegram', 'email')),
    response        text,
    -- Each reminder is sent once per channel, even if the job runs twice.
    UNIQUE (subscription_id, type, due_on, sent_via)
);

CREATE TABLE platform.payments (
    id              bigserial PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES platform.subscriptions (id),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    paid_on         date NOT NULL,
    covers_until    date NOT NULL,
    note            text,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

-- Global prompt templates (client_id NULL). Onboarding copies them into the
-- tenant schema, where the client's overrides also live.
CREATE TABLE platform.prompts (
    id          bigserial PRIMARY KEY,
    client_id   uuid REFERENCES platform.clients (id),
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    text        text NOT NULL,
    model       text,
    temperature real CHECK (temperature BETWEEN 0 AND 2),
    version     integer NOT NULL DEFAULT 1,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (client_id, name, version)
);
CREATE UNIQUE INDEX prompts_one_active ON platform.prompts (client_id, name) NULLS NOT DISTINCT WHERE is_active;

-- Operator, billing and platform jobs write here; tenant runtimes use their own audit_log.
CREATE TABLE platform.audit_log (
    id         bigserial PRIMARY KEY,
    client_id  uuid,
    action     text NOT NULL CHECK (action IN ('config_change', 'lifecycle', 'billing', 'backup', 'purge', 'error')),
    actor      text NOT NULL CHECK (actor IN ('system', 'user', 'admin')),
    actor_id   text,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_client_time ON platform.audit_log (client_id, created_at);

CREATE TABLE platform.error_logs (
    id          bigserial PRIMARY KEY,
    client_id   uuid,
    stage       text NOT NULL,
    level       text NOT NULL CHECK (level IN ('critical', 'warning', 'info')),
    error_type  text NOT NULL,
    message     text NOT NULL,
    stack       text,
    input_data  jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);

CREATE TABLE platform.backups (
    id           bigserial PRIMARY KEY,
    client_id    uuid NOT NULL,
    type         text NOT NULL CHECK (type IN ('daily', 'weekly', 'manual')),
    storage_path text NOT NULL,
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    sha256       text,
    period_start timestamptz,
    period_end   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);
CREATE INDEX backups_client_time ON platform.backups (client_id, created_at);

-- Per-tenant data keys for backups, wrapped by the platform master key.
-- Deleting a row makes that tenant's backups unreadable (crypto-shredding).
CREATE TABLE platform.tenant_keys (
    client_id   uuid PRIMARY KEY REFERENCES platform.clients (id),
    wrapped_key bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Aggregated statistics without PII: kept after a client is purged.
CREATE TABLE platform.daily_stats (
    client_id       uuid NOT NULL,
    client_name     text NOT NULL,
    day             date NOT NULL,
    messages_in     integer NOT NULL DEFAULT 0,
    messages_out    integer NOT NULL DEFAULT 0,
    conversations   integer NOT NULL DEFAULT 0,
    handovers       integer NOT NULL DEFAULT 0,
    errors          integer NOT NULL DEFAULT 0,
    response_ms_p50 integer,
    response_ms_p90 integer,
    rag_hits        integer NOT NULL DEFAULT 0,
    rag_misses      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, day)
);
