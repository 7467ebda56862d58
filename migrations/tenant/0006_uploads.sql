-- Documents uploaded through the runtime's admin endpoint (knowledge sources
-- with `upload`): kept here, so they survive a new pod and are in the backups,
-- until they are deleted through the same endpoint.
CREATE TABLE uploads (
    source      text NOT NULL,
    filename    text NOT NULL CHECK (filename <> '' AND strpos(filename, '/') = 0),
    content     bytea NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, filename)
);
