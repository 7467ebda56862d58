-- What a person's erasure removed, by row id only (random UUIDs and serials:
-- no phone number, no text). Backups taken before the erasure still hold those
-- rows, encrypted; a restore leaves every row listed here out, so an old backup
-- never brings an erased person back.
CREATE TABLE erased_rows (
    table_name text NOT NULL,
    row_id     text NOT NULL,
    erased_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_id)
);

-- inbox.sender now holds the keyed hash of the sender's address (the runtime
-- writes it); rows written before keep the address until the 7-day retention
-- clears them.
COMMENT ON COLUMN inbox.sender IS 'keyed hash of the channel address (grouping only)';
