-- Issue 15: settlement reports as the PSPs sent them (DESIGN §12, ADR 0015). A file is imported once, named by its
-- SHA-256; its lines are kept as parsed (signed ISO minor units, the PSP's category, both references, lineage = the
-- file and the line). Append-only, as every record of what the PSPs said.
CREATE TABLE report_files (
    sha256          text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    psp             text        NOT NULL CHECK (psp IN ('stripe', 'adyen')),
    name            text        NOT NULL,
    account         text,
    lines           integer     NOT NULL,
    unknown_columns text[]      NOT NULL,
    unmapped        jsonb       NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE report_lines (
    file_sha256            text        NOT NULL REFERENCES report_files (sha256),
    line                   integer     NOT NULL,
    psp                    text        NOT NULL,
    kind                   text        NOT NULL,
    category               text        NOT NULL,
    account                text        NOT NULL,
    line_id                text,
    payment_reference      text,
    modification_reference text,
    merchant_reference     text,
    gross_minor            bigint,
    gross_currency         text,
    fee_minor              bigint      NOT NULL,
    net_minor              bigint      NOT NULL,
    net_currency           text        NOT NULL,
    booked_at              timestamptz NOT NULL,
    settled_at             timestamptz,
    batch                  text,
    PRIMARY KEY (file_sha256, line),
    CHECK ((gross_minor IS NULL) = (gross_currency IS NULL))
);
CREATE INDEX report_lines_payment ON report_lines (psp, payment_reference);

CREATE TRIGGER report_files_append_only BEFORE UPDATE OR DELETE ON report_files
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER report_lines_append_only BEFORE UPDATE OR DELETE ON report_lines
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER report_files_no_truncate BEFORE TRUNCATE ON report_files
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER report_lines_no_truncate BEFORE TRUNCATE ON report_lines
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
