-- Correction journals stay what was approved after their own transaction too (review of 0015): an entry must name
-- its journal's fact or correction (nothing else), and every statement that adds entries to a correction has that
-- correction's hash checked again at commit — so entries appended to a booked correction later are refused by the
-- database, not only found by `tally ledger verify`.
CREATE TABLE ledger_pending_corrections (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    correction_ids uuid[] NOT NULL
);

CREATE OR REPLACE FUNCTION ledger_note_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    orphan bigint;
    missing boolean;
BEGIN
    -- One probe of journals per entry: the journal exists, and the entry names its fact or correction.
    SELECT a.journal_id, j.journal_id IS NULL INTO orphan, missing FROM added a
      LEFT JOIN journals j ON j.journal_id = a.journal_id
     WHERE j.journal_id IS NULL OR a.fact_key IS DISTINCT FROM j.fact_key
        OR a.correction_id IS DISTINCT FROM j.correction_id
     LIMIT 1;
    IF FOUND AND missing THEN
        RAISE EXCEPTION 'entry refused: journal % does not exist', orphan USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'entry refused: it names another fact or correction than its journal %', orphan
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO ledger_pending_checks (journal_ids)
    SELECT array_agg(DISTINCT journal_id) FROM added HAVING count(*) > 0;
    INSERT INTO ledger_pending_corrections (correction_ids)
    SELECT array_agg(DISTINCT correction_id) FROM added WHERE correction_id IS NOT NULL HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_check_pending_corrections() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad uuid;
BEGIN
    SELECT c.correction_id INTO bad FROM ledger_corrections c
     WHERE c.correction_id = ANY (NEW.correction_ids)
       AND encode(sha256(convert_to(ledger_correction_canonical(c.correction_id), 'UTF8')), 'hex')
           IS DISTINCT FROM c.journal_sha256
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'correction %: its entries are not the approved journal', bad USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_corrections WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER pending_corrections_bound
    AFTER INSERT ON ledger_pending_corrections DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_pending_corrections();
