-- The tenant's generated credentials (PII key, webhook secret, database and
-- Redis passwords, admin token), kept like its backup key: one JSON document
-- wrapped (AES-256-GCM) by the platform master key. The runtime Secret is
-- rebuilt from it, so a deleted or edited Secret comes back with the same
-- values. A purge deletes the row with the tenant's data (crypto-shredding).
CREATE TABLE platform.tenant_credentials (
    client_id  uuid PRIMARY KEY REFERENCES platform.clients (id),
    wrapped    bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
