-- mart_chargeback_ratio: merchant × calendar month (UTC) × currency — the figure card schemes watch (Visa's and
-- Mastercard's dispute monitoring programs count disputes against the month's transactions).
-- Materialized: view over mart_merchant_daily.
-- Columns:
--   merchant_id, month (first day), currency
--   captures_count, chargebacks_count, captured_minor, chargeback_opened_minor (withdrawn, before returns)
--   ratio_by_count    chargebacks_count / captures_count (DECIMAL, NULL without captures)
--   ratio_by_amount   chargeback_minor / captured_minor (net withdrawn over net captured; NULL without captures)
--   max_version, closed (every day of the month closed)
CREATE OR REPLACE VIEW mart_chargeback_ratio AS
SELECT
    merchant_id,
    date_trunc('month', day)::DATE AS month,
    currency,
    sum(captures_count)::BIGINT AS captures_count,
    sum(chargebacks_count)::BIGINT AS chargebacks_count,
    sum(captured_minor)::BIGINT AS captured_minor,
    sum(chargeback_minor)::BIGINT AS chargeback_minor,
    CASE WHEN sum(captures_count) > 0
         THEN CAST(sum(chargebacks_count) AS DECIMAL(18, 6)) / CAST(sum(captures_count) AS DECIMAL(18, 6)) END
        AS ratio_by_count,
    CASE WHEN sum(captured_minor) > 0
         THEN CAST(sum(chargeback_minor) AS DECIMAL(38, 6)) / CAST(sum(captured_minor) AS DECIMAL(38, 6)) END
        AS ratio_by_amount,
    max(version) AS max_version,
    bool_and(closed) AS closed
FROM mart_merchant_daily
GROUP BY merchant_id, date_trunc('month', day), currency;
