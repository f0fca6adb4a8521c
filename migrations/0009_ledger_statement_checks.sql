-- Issue 14 §1 (the ledger sink's own path, measured per statement in docs/benchmarks.md): the same guarantees as
-- 0002, checked once per statement instead of once per row. A 5,000-fact batch fired 10,000 deferred balance checks
-- at COMMIT (each summing its journal's entries) and 15,000 foreign-key checks while inserting; now it fires one of
-- each kind per statement. ADR 0014 says why this is the same invariant.

-- I3, balanced at commit: each INSERT into entries notes the journals it touched (one row per statement), and a
-- deferred constraint trigger on that note checks them at COMMIT, as entries_balanced did per entry row. A journal's
-- entries may still arrive over several statements of one transaction; what is checked is the state at commit.
CREATE TABLE ledger_pending_checks (
    id          bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_ids bigint[] NOT NULL
);

CREATE FUNCTION ledger_check_pending() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT journal_id, currency, sum(amount_minor) AS total INTO bad
      FROM entries WHERE journal_id = ANY (NEW.journal_ids)
     GROUP BY journal_id, currency HAVING sum(amount_minor) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal % does not balance in %: %', bad.journal_id, bad.currency, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_checks WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER pending_checks_balanced
    AFTER INSERT ON ledger_pending_checks DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_pending();

-- What the foreign keys entries → journals and journals → event_log checked per row, per statement. Deleting a
-- referenced row (the other half of a foreign key) is refused already: every ledger table is append-only (0002).
CREATE FUNCTION ledger_note_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    orphan bigint;
BEGIN
    SELECT a.journal_id INTO orphan FROM added a
     WHERE NOT EXISTS (SELECT 1 FROM journals j WHERE j.journal_id = a.journal_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry refused: journal % does not exist', orphan USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO ledger_pending_checks (journal_ids)
    SELECT array_agg(DISTINCT journal_id) FROM added HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_noted AFTER INSERT ON entries REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_note_entries();

CREATE FUNCTION ledger_check_journal_facts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    orphan uuid;
BEGIN
    SELECT a.fact_key INTO orphan FROM added a
     WHERE NOT EXISTS (SELECT 1 FROM event_log f WHERE f.fact_key = a.fact_key) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal refused: fact % is not in the event log', orphan USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER journals_facts_exist AFTER INSERT ON journals REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_journal_facts();

DROP TRIGGER entries_balanced ON entries;
ALTER TABLE entries DROP CONSTRAINT entries_journal_id_fkey;
ALTER TABLE journals DROP CONSTRAINT journals_fact_key_fkey;
