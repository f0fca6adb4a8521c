-- The warehouse's landing tables (DESIGN §11): what `tally sink warehouse` writes, in the same DuckDB transaction as
-- its offsets. The curated models and marts (models/*.sql) are built from these. Every consumed offset is in exactly
-- one of fct_payment_events (the first time a fact key is seen), wh_duplicates (a fact key seen again) or wh_rejects
-- (a record that is not a bookable fact): that is what `tally recon completeness` counts.
--
-- Times are UTC (TIMESTAMP without zone, microseconds). Money is integer minor units beside its currency.
-- No PII: customer, card and device identifiers are keyed tokens (HMAC), never the values the PSP sent.

CREATE TABLE IF NOT EXISTS wh_offsets (
    group_id         VARCHAR NOT NULL,
    topic            VARCHAR NOT NULL,
    kafka_partition  INTEGER NOT NULL,
    next_offset      BIGINT  NOT NULL,
    owner_epoch      BIGINT  NOT NULL,
    -- The digest of the record at next_offset - 1 (tally_kafka::position): a replaced log is found, not consumed.
    anchor           BLOB,
    PRIMARY KEY (group_id, topic, kafka_partition)
);

CREATE TABLE IF NOT EXISTS fct_payment_events (
    fact_key                VARCHAR   NOT NULL PRIMARY KEY,
    payment_id              VARCHAR   NOT NULL,
    psp                     VARCHAR   NOT NULL,
    kind                    VARCHAR   NOT NULL,
    psp_reference           VARCHAR   NOT NULL,
    original_reference      VARCHAR,
    merchant_id             VARCHAR   NOT NULL,
    currency                VARCHAR   NOT NULL,
    amount_minor            BIGINT    NOT NULL,
    fee_minor               BIGINT,
    occurred_at             TIMESTAMP NOT NULL,
    event_date              DATE      NOT NULL,
    received_at             TIMESTAMP NOT NULL,
    source                  VARCHAR   NOT NULL,
    source_event_id         VARCHAR   NOT NULL,
    card_brand              VARCHAR,
    card_country            VARCHAR,
    payment_method          VARCHAR,
    card_key                VARCHAR,
    customer_key            VARCHAR,
    device_key              VARCHAR,
    reason                  VARCHAR,
    -- Enrichment: the merchant version valid at occurred_at (NULL + merchant_unknown when none) ...
    merchant_valid_from     DATE,
    merchant_unknown        BOOLEAN   NOT NULL,
    -- ... and the amounts in the reporting currency (NULL + fx_unavailable when no ECB rate is close enough).
    reporting_currency      VARCHAR   NOT NULL,
    reporting_amount_minor  BIGINT,
    reporting_fee_minor     BIGINT,
    fx_rate_date            DATE,
    fx_from_rate            VARCHAR,
    fx_to_rate              VARCHAR,
    fx_source               VARCHAR,
    fx_unavailable          BOOLEAN   NOT NULL,
    -- Lineage (I6): the reference versions used, where the fact came from, what wrote it.
    merchants_version       BIGINT,
    fx_version              BIGINT,
    topic                   VARCHAR   NOT NULL,
    kafka_partition         INTEGER   NOT NULL,
    kafka_offset            BIGINT    NOT NULL,
    delivery_id             VARCHAR,
    schema_id               INTEGER   NOT NULL,
    processor_version       VARCHAR   NOT NULL,
    replay_id               VARCHAR,
    landed_at               TIMESTAMP NOT NULL,
    enriched_at             TIMESTAMP NOT NULL
);

-- A fact key consumed again (a producer retry, a replayed range): counted, never a second row.
CREATE TABLE IF NOT EXISTS wh_duplicates (
    fact_key         VARCHAR   NOT NULL,
    topic            VARCHAR   NOT NULL,
    kafka_partition  INTEGER   NOT NULL,
    kafka_offset     BIGINT    NOT NULL,
    landed_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- A record that is not a bookable fact (the ledger sends the same to the DLQ): kept with its reason.
CREATE TABLE IF NOT EXISTS wh_rejects (
    topic            VARCHAR   NOT NULL,
    kafka_partition  INTEGER   NOT NULL,
    kafka_offset     BIGINT    NOT NULL,
    reason           VARCHAR   NOT NULL,
    landed_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- The merchant dimension as of `wh_reference.merchants_version`, mirrored from PostgreSQL (the reference store,
-- ADR 0012) so that the warehouse answers queries on its own.
CREATE TABLE IF NOT EXISTS dim_merchant (
    merchant_id          VARCHAR NOT NULL,
    valid_from           DATE    NOT NULL,
    valid_to             DATE,
    legal_name           VARCHAR NOT NULL,
    country              VARCHAR NOT NULL,
    mcc                  VARCHAR NOT NULL,
    settlement_currency  VARCHAR NOT NULL,
    risk_tier            VARCHAR NOT NULL,
    stripe_ppm           INTEGER NOT NULL,
    stripe_fixed_minor   BIGINT  NOT NULL,
    adyen_ppm            INTEGER NOT NULL,
    adyen_fixed_minor    BIGINT  NOT NULL,
    PRIMARY KEY (merchant_id, valid_from)
);

-- Which reference versions the sink enriches with now, and each re-enrichment of flagged rows they caused.
CREATE TABLE IF NOT EXISTS wh_reference (
    merchants_version  BIGINT,
    fx_version         BIGINT,
    loaded_at          TIMESTAMP NOT NULL,
    reenriched_rows    BIGINT    NOT NULL
);

-- Each replay plan applied (tally replay apply, issue 16): its rows replaced and mart days restated, in the same
-- transaction; a plan applied again finds its row and changes nothing.
CREATE TABLE IF NOT EXISTS wh_replays (
    plan_sha256    VARCHAR   NOT NULL PRIMARY KEY,
    replay_id      VARCHAR   NOT NULL,
    applied_at     TIMESTAMP NOT NULL,
    rows_replaced  BIGINT    NOT NULL,
    restatements   BIGINT    NOT NULL
);

-- Staging tables: TEMP (this connection's, never written to the file or its WAL), emptied by each use. A batch is
-- appended to wh_stage_events before it lands; a re-enrichment fills wh_stage_enrich before it updates the rows it
-- resolves. (Files from before they were TEMP had them in main: dropped.)
DROP TABLE IF EXISTS main.wh_stage_events;
DROP TABLE IF EXISTS main.wh_stage_enrich;
DROP TABLE IF EXISTS main.wh_stage_mart;
DROP TABLE IF EXISTS main.wh_affected_days;
DROP TABLE IF EXISTS main.wh_affected_payments;
CREATE TEMP TABLE IF NOT EXISTS wh_stage_events AS SELECT * FROM fct_payment_events LIMIT 0;
CREATE TEMP TABLE IF NOT EXISTS wh_replay_keys (fact_key VARCHAR);
CREATE TEMP TABLE IF NOT EXISTS wh_stage_enrich AS
SELECT fact_key, merchant_valid_from, merchant_unknown, reporting_currency, reporting_amount_minor, reporting_fee_minor,
       fx_rate_date, fx_from_rate, fx_to_rate, fx_source, fx_unavailable, merchants_version, fx_version, enriched_at
  FROM fct_payment_events LIMIT 0;
