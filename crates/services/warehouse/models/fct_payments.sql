-- fct_payments: one row per payment, recomputed from fct_payment_events for the payments a batch touched.
-- Materialized: incremental table (keyed by payment_id).
-- Columns:
--   payment_id, psp, merchant_id, currency   the payment (its first fact's merchant and currency)
--   authorized_minor        authorized amount (the largest authorization stated)
--   captured_minor          captured, net of capture reversals
--   refunded_minor          refunded, net of failed refunds
--   chargeback_minor        funds withdrawn by disputes, net of what was returned (won, pre-arbitration won)
--   chargeback_lost_minor   disputes lost (first chargeback or pre-arbitration)
--   fees_minor              PSP fees (settlement fees and fee facts)
--   status                  the latest lifecycle stage reached (by event time, then a fixed rank of kinds)
--   first_event_at, last_event_at, facts
--   merchant_valid_from, legal_name, country, mcc, risk_tier   the merchant version valid at the first event
--   reporting_currency, reporting_captured_minor, reporting_refunded_minor, reporting_chargeback_minor
--                           the same in the reporting currency; NULL when a fact of the payment has no rate
--   fx_unavailable_facts, merchant_unknown_facts
SELECT
    e.payment_id,
    any_value(e.psp) AS psp,
    arg_min(e.merchant_id, e.occurred_at) AS merchant_id,
    arg_min(e.currency, e.occurred_at) AS currency,
    coalesce(max(e.amount_minor) FILTER (WHERE e.kind = 'authorized'), 0) AS authorized_minor,
    coalesce(sum(CASE e.kind WHEN 'captured' THEN e.amount_minor WHEN 'capture_reversed' THEN -e.amount_minor END), 0)::BIGINT AS captured_minor,
    coalesce(sum(CASE e.kind WHEN 'refunded' THEN e.amount_minor WHEN 'refund_failed' THEN -e.amount_minor END), 0)::BIGINT AS refunded_minor,
    coalesce(sum(CASE WHEN e.kind IN ('chargeback_opened', 'second_chargeback') THEN e.amount_minor
                      WHEN e.kind IN ('chargeback_won', 'prearbitration_won') THEN -e.amount_minor END), 0)::BIGINT AS chargeback_minor,
    coalesce(sum(e.amount_minor) FILTER (WHERE e.kind IN ('chargeback_lost', 'prearbitration_lost')), 0)::BIGINT AS chargeback_lost_minor,
    coalesce(sum(CASE WHEN e.kind = 'settled' THEN coalesce(e.fee_minor, 0) WHEN e.kind = 'fee' THEN e.amount_minor END), 0)::BIGINT AS fees_minor,
    arg_max(e.kind, (e.occurred_at, CASE e.kind
        WHEN 'authorized' THEN 1 WHEN 'authorization_failed' THEN 1 WHEN 'canceled' THEN 2 WHEN 'captured' THEN 3
        WHEN 'capture_failed' THEN 3 WHEN 'capture_reversed' THEN 4 WHEN 'settled' THEN 5 WHEN 'refunded' THEN 6
        WHEN 'refund_failed' THEN 7 WHEN 'chargeback_opened' THEN 8 WHEN 'chargeback_won' THEN 9
        WHEN 'chargeback_lost' THEN 9 WHEN 'second_chargeback' THEN 10 WHEN 'prearbitration_won' THEN 11
        WHEN 'prearbitration_lost' THEN 11 ELSE 0 END)) AS status,
    min(e.occurred_at) AS first_event_at,
    max(e.occurred_at) AS last_event_at,
    count(*) AS facts,
    arg_min(e.merchant_valid_from, e.occurred_at) AS merchant_valid_from,
    any_value(d.legal_name) AS legal_name,
    any_value(d.country) AS country,
    any_value(d.mcc) AS mcc,
    any_value(d.risk_tier) AS risk_tier,
    any_value(e.reporting_currency) AS reporting_currency,
    CASE WHEN bool_or(e.fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE e.kind WHEN 'captured' THEN e.reporting_amount_minor WHEN 'capture_reversed' THEN -e.reporting_amount_minor END), 0) END::BIGINT AS reporting_captured_minor,
    CASE WHEN bool_or(e.fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE e.kind WHEN 'refunded' THEN e.reporting_amount_minor WHEN 'refund_failed' THEN -e.reporting_amount_minor END), 0) END::BIGINT AS reporting_refunded_minor,
    CASE WHEN bool_or(e.fx_unavailable) THEN NULL ELSE
        coalesce(sum(CASE WHEN e.kind IN ('chargeback_opened', 'second_chargeback') THEN e.reporting_amount_minor
                          WHEN e.kind IN ('chargeback_won', 'prearbitration_won') THEN -e.reporting_amount_minor END), 0) END::BIGINT AS reporting_chargeback_minor,
    count(*) FILTER (WHERE e.fx_unavailable) AS fx_unavailable_facts,
    count(*) FILTER (WHERE e.merchant_unknown) AS merchant_unknown_facts
FROM fct_payment_events e
LEFT JOIN dim_merchant d ON d.merchant_id = e.merchant_id AND d.valid_from = e.merchant_valid_from
WHERE e.payment_id IN (SELECT payment_id FROM wh_affected_payments)
  -- Settlement report lines (settled_credit, settled_debit, settled_payout) are what the PSP's balance did, not a
  -- stage of the payment: they never change its amounts or status here.
  AND e.source <> 'settlement_report'
GROUP BY e.payment_id
