-- Issue 15 §4: PSP reconciliation breaks as first found, and their resolutions. Both append-only: a break is a
-- record of what a run saw; a resolution is an attributable decision (actor, reason, ticket) about one break.
CREATE TABLE recon_breaks (
    break_id        text        PRIMARY KEY,
    kind            text        NOT NULL,
    psp             text        NOT NULL,
    payment_id      text,
    file_sha256     text,
    file_name       text,
    line            integer,
    fact_key        text,
    topic           text,
    kafka_partition integer,
    kafka_offset    bigint,
    amount_minor    bigint,
    currency        text,
    detail          text        NOT NULL,
    first_seen      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE recon_resolutions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    break_id    text        NOT NULL REFERENCES recon_breaks (break_id),
    resolution  text        NOT NULL CHECK (resolution IN ('fixed_by_booking', 'accepted', 'auto')),
    reason      text        NOT NULL CHECK (reason <> ''),
    ticket      text        NOT NULL CHECK (ticket <> ''),
    actor       text        NOT NULL CHECK (actor <> ''),
    -- Maker-checker: a resolution that books money names the proposed journal's hash and a second operator.
    journal_sha256 text,
    approved_by text,
    resolved_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (resolution <> 'fixed_by_booking'
           OR (journal_sha256 IS NOT NULL AND approved_by IS NOT NULL AND approved_by <> actor))
);
CREATE UNIQUE INDEX recon_resolutions_once ON recon_resolutions (break_id);

CREATE TRIGGER recon_breaks_append_only BEFORE UPDATE OR DELETE ON recon_breaks
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER recon_resolutions_append_only BEFORE UPDATE OR DELETE ON recon_resolutions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER recon_breaks_no_truncate BEFORE TRUNCATE ON recon_breaks
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER recon_resolutions_no_truncate BEFORE TRUNCATE ON recon_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
