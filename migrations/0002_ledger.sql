-- The ledger sink's schema (DESIGN §1 I2–I6, §4, §5).

-- Every booked fact, once (the fact key is the final arbiter of exactly-once, I2), with its lineage (I6).
CREATE TABLE event_log (
    fact_key           uuid        PRIMARY KEY,
    kind               text        NOT NULL,
    payment_id         text        NOT NULL,
    psp                text        NOT NULL,
    psp_reference      text        NOT NULL,
    original_reference text,
    merchant_id        text        NOT NULL,
    amount_minor       bigint      NOT NULL,
    currency           text        NOT NULL,
    fee_minor          bigint,
    occurred_at        timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    source             text        NOT NULL,
    source_event_id    text        NOT NULL,
    delivery_id        text,
    topic              text        NOT NULL,
    kafka_partition    int         NOT NULL,
    kafka_offset       bigint      NOT NULL,
    schema_id          int         NOT NULL,
    processor_version  text        NOT NULL,
    replay_id          uuid,
    booked_at          timestamptz NOT NULL DEFAULT now(),
    event              jsonb       NOT NULL,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX event_log_payment ON event_log (payment_id);

-- Journals and their entries: signed minor units, debit positive, credit negative.
CREATE TABLE journals (
    journal_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fact_key          uuid        NOT NULL UNIQUE REFERENCES event_log (fact_key),
    payment_id        text        NOT NULL,
    kind              text        NOT NULL,
    booked_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entries (
    entry_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_id        bigint      NOT NULL REFERENCES journals (journal_id),
    account           text        NOT NULL,
    currency          text        NOT NULL,
    amount_minor      bigint      NOT NULL CHECK (amount_minor <> 0),
    -- Lineage on every entry (I6): where the fact that posted it came from.
    fact_key          uuid        NOT NULL,
    topic             text        NOT NULL,
    kafka_partition   int         NOT NULL,
    kafka_offset      bigint      NOT NULL,
    processor_version text        NOT NULL,
    replay_id         uuid
);
CREATE INDEX entries_journal ON entries (journal_id);
CREATE INDEX entries_account ON entries (account, currency);

-- I3: every journal sums to zero per currency, checked at commit.
CREATE FUNCTION ledger_check_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT currency, sum(amount_minor) AS total INTO bad
      FROM entries WHERE journal_id = NEW.journal_id
     GROUP BY currency HAVING sum(amount_minor) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal % does not balance in %: %', NEW.journal_id, bad.currency, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entries_balanced
    AFTER INSERT ON entries DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_journal_balanced();

-- I3: ledger rows are append-only; a correction is a new reversal journal.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused (book a reversal instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE ON journals
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journals_no_truncate BEFORE TRUNCATE ON journals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Balances per account and currency, maintained in the same transaction as the entries (= Σ entries, checked by
-- `tally ledger verify`).
CREATE TABLE account_balances (
    account      text   NOT NULL,
    currency     text   NOT NULL,
    balance_minor bigint NOT NULL,
    PRIMARY KEY (account, currency)
);

-- Payment status, derived from the set of the payment's facts (order-insensitive, I4).
CREATE TABLE payments (
    payment_id   text        PRIMARY KEY,
    psp          text        NOT NULL,
    merchant_id  text        NOT NULL,
    currency     text        NOT NULL,
    status       text,
    facts        int         NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Data-quality exceptions: orphans (a fact whose predecessor is missing), content conflicts (one fact key, two
-- contents). Orphans resolve themselves when the predecessor arrives.
CREATE TABLE dq_exceptions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('orphan', 'content_conflict')),
    fact_key     uuid        NOT NULL,
    payment_id   text        NOT NULL,
    detail       jsonb       NOT NULL,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
CREATE UNIQUE INDEX dq_exceptions_open_orphan ON dq_exceptions (fact_key) WHERE kind = 'orphan';
CREATE INDEX dq_exceptions_payment ON dq_exceptions (payment_id) WHERE resolved_at IS NULL;

-- Operational view per merchant and currency, with its freshness watermark (the newest received_at applied).
CREATE TABLE merchant_views (
    merchant_id     text        NOT NULL,
    currency        text        NOT NULL,
    captured_minor  bigint      NOT NULL DEFAULT 0,
    refunded_minor  bigint      NOT NULL DEFAULT 0,
    disputed_minor  bigint      NOT NULL DEFAULT 0,
    facts           bigint      NOT NULL DEFAULT 0,
    watermark       timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, currency)
);

-- Records the sink could not book, with why and where they came from (their copy went to payments.dlq.v1).
CREATE TABLE sink_rejects (
    topic           text        NOT NULL,
    kafka_partition int         NOT NULL,
    kafka_offset    bigint      NOT NULL,
    reason          text        NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- DESIGN §5: each sink's position per partition, fenced by the owner's epoch.
CREATE TABLE sink_offsets (
    group_id        text   NOT NULL,
    topic           text   NOT NULL,
    kafka_partition int    NOT NULL,
    next_offset     bigint NOT NULL,
    owner_epoch     bigint NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);

-- Records whose fact was booked already (a retried or restated delivery): kept so that every consumed offset is
-- accounted for (event_log ∪ sink_duplicates ∪ sink_rejects), and conflicts are visible.
CREATE TABLE sink_duplicates (
    topic           text    NOT NULL,
    kafka_partition int     NOT NULL,
    kafka_offset    bigint  NOT NULL,
    fact_key        uuid    NOT NULL,
    conflict        boolean NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
