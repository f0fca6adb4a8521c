-- mart_daily_overview: UTC day × currency, in the shape finance users know from Fivetran's dbt_stripe
-- `stripe__daily_overview` (int_stripe__account_rolling_totals.sql in github.com/fivetran/dbt_stripe): daily totals
-- and their rolling (running) totals, here over every merchant and PSP, in integer minor units of `currency` instead
-- of rounded major units. Materialized: view over mart_merchant_daily (so a restated merchant day restates the
-- overview: `max_version` and `last_restated_at` say so).
-- Columns:
--   date_day, currency
--   total_daily_sales_amount            captured, net of capture reversals
--   total_daily_refunds_amount          refunds (negative)
--   total_daily_adjustments_amount      dispute withdrawals net of returns (negative)
--   total_daily_gross_transaction_amount  sales + refunds + adjustments
--   total_daily_payout_fee_amount       PSP fees (negative)
--   total_daily_net_transactions_amount gross − fees
--   total_daily_gross_payout_amount     payouts (negative: money leaving the balance)
--   daily_net_activity_amount           net transactions + payouts
--   total_daily_sales_count, total_daily_adjustments_count, total_daily_payouts_count,
--   total_daily_failed_charge_count, total_daily_failed_charge_amount
--   rolling_total_daily_sales_amount, rolling_total_daily_refunds_amount, rolling_total_daily_adjustments_amount,
--   rolling_total_daily_net_transactions_amount, rolling_daily_net_activity_amount   running totals per currency
--   merchants, max_version, last_restated_at, complete_to (the least watermark of the day's rows), closed (all rows)
CREATE OR REPLACE VIEW mart_daily_overview AS
WITH daily AS (
    SELECT
        day AS date_day,
        currency,
        sum(captured_minor)::BIGINT AS total_daily_sales_amount,
        (-sum(refunded_minor))::BIGINT AS total_daily_refunds_amount,
        (-sum(chargeback_minor))::BIGINT AS total_daily_adjustments_amount,
        sum(captured_minor - refunded_minor - chargeback_minor)::BIGINT AS total_daily_gross_transaction_amount,
        (-sum(fees_minor))::BIGINT AS total_daily_payout_fee_amount,
        sum(captured_minor - refunded_minor - chargeback_minor - fees_minor)::BIGINT AS total_daily_net_transactions_amount,
        (-sum(payouts_minor))::BIGINT AS total_daily_gross_payout_amount,
        sum(captured_minor - refunded_minor - chargeback_minor - fees_minor - payouts_minor)::BIGINT AS daily_net_activity_amount,
        sum(captures_count)::BIGINT AS total_daily_sales_count,
        sum(chargebacks_count)::BIGINT AS total_daily_adjustments_count,
        sum(payouts_count)::BIGINT AS total_daily_payouts_count,
        sum(failed_count)::BIGINT AS total_daily_failed_charge_count,
        sum(failed_minor)::BIGINT AS total_daily_failed_charge_amount,
        count(DISTINCT merchant_id) AS merchants,
        max(version) AS max_version,
        max(restated_at) AS last_restated_at,
        min(complete_to) AS complete_to,
        bool_and(closed) AS closed
    FROM mart_merchant_daily
    GROUP BY day, currency
)
SELECT
    *,
    sum(total_daily_sales_amount) OVER running AS rolling_total_daily_sales_amount,
    sum(total_daily_refunds_amount) OVER running AS rolling_total_daily_refunds_amount,
    sum(total_daily_adjustments_amount) OVER running AS rolling_total_daily_adjustments_amount,
    sum(total_daily_net_transactions_amount) OVER running AS rolling_total_daily_net_transactions_amount,
    sum(daily_net_activity_amount) OVER running AS rolling_daily_net_activity_amount
FROM daily
WINDOW running AS (PARTITION BY currency ORDER BY date_day ROWS UNBOUNDED PRECEDING);
