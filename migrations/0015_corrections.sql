-- Correction journals (I3: a correction is a new journal, never a change) and the maker-checker flow that books
-- them for a PSP reconciliation break (issue 15 §4; the replay issue books its corrections the same way).
--
-- A correction is booked for a cause (`recon_break:{id}`), by the operator who proposed it and a second one who
-- approved it, in one transaction with its journal, entries and balances. Its journal has no fact: `journals` and
-- `entries` name either a fact (and its Kafka lineage, I6) or a correction, never both, never neither.
CREATE TABLE ledger_corrections (
    correction_id  uuid        PRIMARY KEY,
    cause          text        NOT NULL UNIQUE CHECK (cause <> ''),
    -- SHA-256 of the canonical text (tally_domain::ledger::Correction::canonical), recomputed at commit.
    journal_sha256 text        NOT NULL,
    proposed_by    text        NOT NULL CHECK (proposed_by <> ''),
    approved_by    text        NOT NULL CHECK (approved_by <> '' AND approved_by <> proposed_by),
    reason         text        NOT NULL CHECK (reason <> ''),
    ticket         text        NOT NULL CHECK (ticket <> ''),
    booked_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER ledger_corrections_append_only BEFORE UPDATE OR DELETE ON ledger_corrections
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_corrections_no_truncate BEFORE TRUNCATE ON ledger_corrections
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

ALTER TABLE journals ALTER COLUMN fact_key DROP NOT NULL, ALTER COLUMN payment_id DROP NOT NULL,
    ADD COLUMN correction_id uuid,
    ADD CONSTRAINT journals_fact_or_correction CHECK (
        (fact_key IS NOT NULL AND correction_id IS NULL AND payment_id IS NOT NULL)
        OR (fact_key IS NULL AND correction_id IS NOT NULL));
CREATE UNIQUE INDEX journals_correction ON journals (correction_id) WHERE correction_id IS NOT NULL;

ALTER TABLE entries ALTER COLUMN fact_key DROP NOT NULL, ALTER COLUMN topic DROP NOT NULL,
    ALTER COLUMN kafka_partition DROP NOT NULL, ALTER COLUMN kafka_offset DROP NOT NULL,
    ADD COLUMN correction_id uuid,
    ADD CONSTRAINT entries_fact_or_correction CHECK (
        (correction_id IS NULL AND fact_key IS NOT NULL AND topic IS NOT NULL AND kafka_partition IS NOT NULL
            AND kafka_offset IS NOT NULL)
        OR (correction_id IS NOT NULL AND fact_key IS NULL AND topic IS NULL AND kafka_partition IS NULL
            AND kafka_offset IS NULL));
CREATE INDEX entries_correction ON entries (correction_id) WHERE correction_id IS NOT NULL;

-- A journal names a booked fact or a booked correction (the per-statement check of 0009, extended).
CREATE OR REPLACE FUNCTION ledger_check_journal_facts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    orphan text;
BEGIN
    SELECT coalesce(a.fact_key::text, 'correction ' || a.correction_id) INTO orphan FROM added a
     WHERE (a.fact_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM event_log f WHERE f.fact_key = a.fact_key))
        OR (a.correction_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM ledger_corrections c WHERE c.correction_id = a.correction_id))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal refused: % is not in the event log or the corrections', orphan
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

-- The canonical text of a booked correction, from its entries in booking order.
CREATE FUNCTION ledger_correction_canonical(id uuid) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT 'tally-correction-v1' || E'\n' || c.cause || E'\n'
           || coalesce((SELECT string_agg(e.account || E'\t' || e.currency || E'\t' || e.amount_minor || E'\n', ''
                                          ORDER BY e.entry_id)
                          FROM entries e WHERE e.correction_id = c.correction_id), '')
      FROM ledger_corrections c WHERE c.correction_id = id
$$;

-- At commit: a correction has exactly one journal, and its entries are the approved ones (the hash matches).
CREATE FUNCTION ledger_check_correction() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM journals WHERE correction_id = NEW.correction_id;
    IF n <> 1 THEN
        RAISE EXCEPTION 'correction % has % journals, not one', NEW.correction_id, n USING ERRCODE = 'check_violation';
    END IF;
    IF encode(sha256(convert_to(ledger_correction_canonical(NEW.correction_id), 'UTF8')), 'hex')
           IS DISTINCT FROM NEW.journal_sha256 THEN
        RAISE EXCEPTION 'correction %: its entries are not the approved journal %', NEW.correction_id,
            NEW.journal_sha256 USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_corrections_bound
    AFTER INSERT ON ledger_corrections DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_correction();

-- The maker's proposals: the journal an operator proposes for a break, with its hash; append-only. The checker
-- approves one by its hash (`tally recon breaks approve ID --journal-sha256 H`).
CREATE TABLE recon_proposals (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    break_id       text        NOT NULL REFERENCES recon_breaks (break_id),
    journal        jsonb       NOT NULL,
    journal_sha256 text        NOT NULL,
    proposed_by    text        NOT NULL CHECK (proposed_by <> ''),
    reason         text        NOT NULL CHECK (reason <> ''),
    ticket         text        NOT NULL CHECK (ticket <> ''),
    proposed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (break_id, journal_sha256)
);
CREATE TRIGGER recon_proposals_append_only BEFORE UPDATE OR DELETE ON recon_proposals
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER recon_proposals_no_truncate BEFORE TRUNCATE ON recon_proposals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- At commit: a `fixed_by_booking` resolution is its booked correction — same break, hash, maker and checker.
CREATE FUNCTION recon_check_booked_resolution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.resolution = 'fixed_by_booking' AND NOT EXISTS (
        SELECT 1 FROM ledger_corrections c
         WHERE c.cause = 'recon_break:' || NEW.break_id AND c.journal_sha256 = NEW.journal_sha256
           AND c.proposed_by = NEW.actor AND c.approved_by = NEW.approved_by) THEN
        RAISE EXCEPTION 'break %: fixed_by_booking without its booked correction journal %', NEW.break_id,
            NEW.journal_sha256 USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER recon_resolutions_booked
    AFTER INSERT ON recon_resolutions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION recon_check_booked_resolution();
