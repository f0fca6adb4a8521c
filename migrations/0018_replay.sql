-- Replay apply (issue 16 §3): a replay corrects the ledger with correction journals (never an UPDATE): for each
-- fact it changes, a reversal of what the ledger holds and a re-post of what the current rules post, both tagged
-- with the replay's id and naming the fact they correct, in one transaction with the plan's application record.
ALTER TABLE ledger_corrections ADD COLUMN fact_key uuid, ADD COLUMN replay_id uuid;
CREATE INDEX ledger_corrections_fact ON ledger_corrections (fact_key) WHERE fact_key IS NOT NULL;

CREATE TABLE replay_applications (
    plan_sha256   text        PRIMARY KEY,
    replay_id     uuid        NOT NULL UNIQUE,
    scope         jsonb       NOT NULL,
    base_checksum text        NOT NULL,
    applied_by    text        NOT NULL CHECK (applied_by <> ''),
    approved_by   text        NOT NULL CHECK (approved_by <> '' AND approved_by <> applied_by),
    reason        text        NOT NULL CHECK (reason <> ''),
    ticket        text        NOT NULL CHECK (ticket <> ''),
    corrections   int         NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER replay_applications_append_only BEFORE UPDATE OR DELETE ON replay_applications
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER replay_applications_no_truncate BEFORE TRUNCATE ON replay_applications
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
