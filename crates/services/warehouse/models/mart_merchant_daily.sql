-- mart_merchant_daily: merchant × UTC day (of each fact's occurred_at) × currency. Governed (see README.md): the
-- sink recomputes the affected keys' values with this SELECT and versions, closes and restates the rows.
-- Materialized: incremental table (keyed by merchant_id, day, currency), plus the governance columns
-- version, computed_at, restated_at, complete_to, closed.
-- Value columns:
--   captures_count          captures stated that day (capture reversals not subtracted from the count)
--   captured_minor          captured, net of capture reversals
--   refunds_count           refunds, net of failed refunds
--   refunded_minor          refunded, net of failed refunds
--   chargebacks_count       disputes opened (first chargebacks)
--   chargeback_minor        funds withdrawn by disputes, net of what was returned (won, pre-arbitration won)
--   chargeback_lost_minor   disputes lost (first chargeback or pre-arbitration)
--   fees_minor              PSP fees (settlement fees and fee facts)
--   failed_count, failed_minor   declined authorizations
--   payouts_count, payouts_minor payouts to the merchant
--   net_minor               captured − refunded − chargeback (before fees)
--   reporting_currency, reporting_captured_minor, reporting_refunded_minor, reporting_chargeback_minor,
--   reporting_net_minor     the same in the reporting currency; NULL when a fact of the row has no rate
--   fx_unavailable_facts, merchant_unknown_facts, facts
SELECT
    merchant_id,
    event_date AS day,
    currency,
    count(*) FILTER (WHERE kind = 'captured') AS captures_count,
    coalesce(sum(CASE kind WHEN 'captured' THEN amount_minor WHEN 'capture_reversed' THEN -amount_minor END), 0)::BIGINT AS captured_minor,
    (count(*) FILTER (WHERE kind = 'refunded') - count(*) FILTER (WHERE kind = 'refund_failed')) AS refunds_count,
    coalesce(sum(CASE kind WHEN 'refunded' THEN amount_minor WHEN 'refund_failed' THEN -amount_minor END), 0)::BIGINT AS refunded_minor,
    count(*) FILTER (WHERE kind = 'chargeback_opened') AS chargebacks_count,
    coalesce(sum(CASE WHEN kind IN ('chargeback_opened', 'second_chargeback') THEN amount_minor
                      WHEN kind IN ('chargeback_won', 'prearbitration_won') THEN -amount_minor END), 0)::BIGINT AS chargeback_minor,
    coalesce(sum(amount_minor) FILTER (WHERE kind IN ('chargeback_lost', 'prearbitration_lost')), 0)::BIGINT AS chargeback_lost_minor,
    coalesce(sum(CASE WHEN kind = 'settled' THEN coalesce(fee_minor, 0) WHEN kind = 'fee' THEN amount_minor END), 0)::BIGINT AS fees_minor,
    count(*) FILTER (WHERE kind = 'authorization_failed') AS failed_count,
    coalesce(sum(amount_minor) FILTER (WHERE kind = 'authorization_failed'), 0)::BIGINT AS failed_minor,
    count(*) FILTER (WHERE kind = 'payout') AS payouts_count,
    coalesce(sum(amount_minor) FILTER (WHERE kind = 'payout'), 0)::BIGINT AS payouts_minor,
    (coalesce(sum(CASE WHEN kind = 'captured' THEN amount_minor
                       WHEN kind IN ('capture_reversed', 'refunded', 'chargeback_opened', 'second_chargeback') THEN -amount_minor
                       WHEN kind IN ('refund_failed', 'chargeback_won', 'prearbitration_won') THEN amount_minor END), 0))::BIGINT AS net_minor,
    any_value(reporting_currency) AS reporting_currency,
    CASE WHEN bool_or(fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE kind WHEN 'captured' THEN reporting_amount_minor WHEN 'capture_reversed' THEN -reporting_amount_minor END), 0) END::BIGINT AS reporting_captured_minor,
    CASE WHEN bool_or(fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE kind WHEN 'refunded' THEN reporting_amount_minor WHEN 'refund_failed' THEN -reporting_amount_minor END), 0) END::BIGINT AS reporting_refunded_minor,
    CASE WHEN bool_or(fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE WHEN kind IN ('chargeback_opened', 'second_chargeback') THEN reporting_amount_minor
                          WHEN kind IN ('chargeback_won', 'prearbitration_won') THEN -reporting_amount_minor END), 0) END::BIGINT AS reporting_chargeback_minor,
    CASE WHEN bool_or(fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE WHEN kind = 'captured' THEN reporting_amount_minor
                          WHEN kind IN ('capture_reversed', 'refunded', 'chargeback_opened', 'second_chargeback') THEN -reporting_amount_minor
                          WHEN kind IN ('refund_failed', 'chargeback_won', 'prearbitration_won') THEN reporting_amount_minor END), 0) END::BIGINT AS reporting_net_minor,
    count(*) FILTER (WHERE fx_unavailable) AS fx_unavailable_facts,
    count(*) FILTER (WHERE merchant_unknown) AS merchant_unknown_facts,
    count(*) AS facts
FROM fct_payment_events e
SEMI JOIN wh_affected_days a ON a.merchant_id = e.merchant_id AND a.day = e.event_date AND a.currency = e.currency
GROUP BY merchant_id, event_date, currency
