-- The archive sink's manifest (DESIGN §1 I1, I2, I6; §5). A Parquet file exists for the platform only once its row
-- is here: the row and the sink's offset move in one epoch-fenced transaction (same `sink_offsets` protocol as the
-- ledger), so a file written by a crashed or fenced attempt is garbage that `tally archive gc` removes.
CREATE TABLE archive_files (
    topic           text        NOT NULL,
    kafka_partition int         NOT NULL,
    start_offset    bigint      NOT NULL,
    -- Exclusive: the file holds offsets start_offset .. end_offset - 1.
    end_offset      bigint      NOT NULL,
    path            text        NOT NULL UNIQUE,
    bytes           bigint      NOT NULL,
    sha256          text        NOT NULL,
    records         bigint      NOT NULL,
    -- Per-range checksum over the facts the file holds (DESIGN §1 I2): how many records decode to a fact, and the
    -- exact sum of the first 8 bytes of their fact keys (big-endian, signed), so that recon compares a range with
    -- the ledger without moving its rows.
    facts           bigint      NOT NULL,
    key_sum         numeric     NOT NULL,
    first_timestamp timestamptz,
    last_timestamp  timestamptz,
    owner_epoch     bigint      NOT NULL,
    processor_version text      NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, start_offset),
    CHECK (end_offset > start_offset AND records > 0 AND records <= end_offset - start_offset)
);

CREATE TRIGGER archive_files_append_only BEFORE UPDATE OR DELETE ON archive_files
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER archive_files_no_truncate BEFORE TRUNCATE ON archive_files
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
