-- Issue 14, item 2: reference data, versioned (DESIGN §11, I5). Each load of a file is a version named by the
-- file's content hash; loading the same content again changes nothing. Everything here is append-only: the merchant
-- dimension's SCD2 closes are rows of their own (merchant_version_ends), not updates of valid_to, so that what the
-- dimension said after any version stays reconstructible.
CREATE TABLE reference_versions (
    version_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('merchants', 'fx')),
    content_hash  text        NOT NULL,
    source        text        NOT NULL,
    rows          bigint      NOT NULL,
    changes       bigint      NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (kind, content_hash)
);

-- One row per merchant version, as first loaded.
CREATE TABLE merchant_versions (
    merchant_id          text     NOT NULL,
    valid_from           date     NOT NULL,
    legal_name           text     NOT NULL,
    country              text     NOT NULL,
    mcc                  text     NOT NULL,
    settlement_currency  text     NOT NULL,
    risk_tier            text     NOT NULL,
    stripe_ppm           integer  NOT NULL,
    stripe_fixed_minor   bigint   NOT NULL,
    adyen_ppm            integer  NOT NULL,
    adyen_fixed_minor    bigint   NOT NULL,
    version_id           bigint   NOT NULL REFERENCES reference_versions (version_id),
    PRIMARY KEY (merchant_id, valid_from)
);

-- The end of a version (half-open: valid until the day before valid_to), set once.
CREATE TABLE merchant_version_ends (
    merchant_id  text   NOT NULL,
    valid_from   date   NOT NULL,
    valid_to     date   NOT NULL CHECK (valid_to > valid_from),
    version_id   bigint NOT NULL REFERENCES reference_versions (version_id),
    PRIMARY KEY (merchant_id, valid_from),
    FOREIGN KEY (merchant_id, valid_from) REFERENCES merchant_versions (merchant_id, valid_from)
);

CREATE VIEW dim_merchant AS
SELECT v.merchant_id, v.valid_from, e.valid_to, v.legal_name, v.country, v.mcc, v.settlement_currency, v.risk_tier,
       v.stripe_ppm, v.stripe_fixed_minor, v.adyen_ppm, v.adyen_fixed_minor, v.version_id,
       e.version_id AS closed_in_version
  FROM merchant_versions v LEFT JOIN merchant_version_ends e USING (merchant_id, valid_from);

-- ECB rates as published, per version: units of `currency` per 1 EUR = mantissa / 10^scale.
CREATE TABLE fx_rates (
    version_id  bigint   NOT NULL REFERENCES reference_versions (version_id),
    rate_date   date     NOT NULL,
    currency    text     NOT NULL,
    mantissa    bigint   NOT NULL CHECK (mantissa > 0),
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 18),
    PRIMARY KEY (version_id, currency, rate_date)
);

CREATE TRIGGER reference_versions_append_only BEFORE UPDATE OR DELETE ON reference_versions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER merchant_versions_append_only BEFORE UPDATE OR DELETE ON merchant_versions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER merchant_version_ends_append_only BEFORE UPDATE OR DELETE ON merchant_version_ends
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER fx_rates_append_only BEFORE UPDATE OR DELETE ON fx_rates
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
