-- The audit log (I8, issue 16 §5): every correction, resolution, approval, reference load (and, as they are built,
-- replay, backfill and requeue) is a record whose canonical bytes are a leaf of an RFC 6962 Merkle tree. Records
-- are written in the same transaction as what they record, under one advisory lock, so their sequence has no gaps.
CREATE TABLE audit_log (
    seq         bigint      PRIMARY KEY CHECK (seq >= 0),
    -- The canonical bytes (tally_audit::Record::canonical): what is hashed is what is kept, byte for byte.
    record      bytea       NOT NULL,
    leaf_hash   bytea       NOT NULL CHECK (leaf_hash = sha256('\x00'::bytea || record)),
    action      text        NOT NULL CHECK (action <> ''),
    actor       text        NOT NULL CHECK (actor <> ''),
    subject     text,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_log_subject ON audit_log (subject);

CREATE FUNCTION audit_check_next() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    SELECT coalesce(max(seq) + 1, 0) INTO next FROM audit_log;
    IF NEW.seq <> next THEN
        RAISE EXCEPTION 'audit record % refused: the next is %', NEW.seq, next USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_next BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_check_next();

-- Signed tree heads (C2SP tlog-checkpoint in a signed note, Ed25519).
CREATE TABLE audit_checkpoints (
    size        bigint      PRIMARY KEY CHECK (size >= 0),
    root        bytea       NOT NULL CHECK (length(root) = 32),
    note        text        NOT NULL,
    signed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
