//! Stripe's itemized financial reports: `balance_change_from_activity.itemized.3` and
//! `payout_reconciliation.itemized.5` (docs.stripe.com/reports/report-types/balance, …/payout-reconciliation;
//! `../shared/fixtures/reports/stripe_report_columns.md`). The columns a file holds are chosen when the report is
//! run, so any subset may arrive in any order: columns are read by name, those Tally does not know are counted.
//! `gross`, `fee` and `net` are decimals in **major** units ("dollars for USD, yen for JPY"), optionally with a
//! comma as the decimal separator (the run's `decimal_separator`). `*_utc` columns are UTC, written
//! `YYYY-MM-DD HH:MM:SS` (as in hledger's published rules for this CSV); un-suffixed date columns are in the run's
//! time zone, which the file does not state, so Tally reads only the `_utc` ones and requires `created_utc`.
//!
//! A report is of one Stripe account's balance (the platform's, or a connected account's when run with the
//! `connected_account` parameter); which one is not in the file, so the importer says it ([`Options::account`]).

use tally_domain::Psp;
use tally_money::{parse_major_in, Amount, DecimalSeparator, ExponentScheme, Money};

use crate::report::{self, Errors, Header, LineKind, Refused, Report, SettlementLine};

/// How the report was run: what the file itself does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The Stripe account whose balance the report is of (`acct_…`, or the platform's merchant id).
    pub account: String,
    pub decimal_separator: DecimalSeparator,
}

impl Default for Options {
    fn default() -> Self {
        Options { account: super::PLATFORM_MERCHANT.to_owned(), decimal_separator: DecimalSeparator::Dot }
    }
}

/// Columns Tally needs on every line.
pub const REQUIRED: &[&str] =
    &["balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category"];

/// Columns Stripe documents for these report types (seen in its docs and their mirrors): known, read where Tally
/// uses them, never counted as unknown. `payment_metadata[…]`, `refund_metadata[…]` and `transfer_metadata[…]` are
/// the run's chosen metadata keys.
pub const DOCUMENTED: &[&str] = &[
    "balance_transaction_id",
    "created_utc",
    "created",
    "available_on_utc",
    "available_on",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "automatic_payout_effective_at",
    "card_brand",
    "card_country",
    "card_funding",
    "charge_created_utc",
    "charge_created",
    "customer_id",
    "charge_id",
    "payment_intent_id",
    "invoice_id",
    "payment_method_type",
];

fn documented(name: &str) -> bool {
    DOCUMENTED.contains(&name)
        || ["payment_metadata[", "refund_metadata[", "transfer_metadata["]
            .iter()
            .any(|p| name.starts_with(p) && name.ends_with(']'))
}

/// Stripe's reporting categories (docs.stripe.com/reports/reporting-categories) that Tally maps.
fn kind(category: &str) -> LineKind {
    match category {
        "charge" => LineKind::Settled,
        "refund" => LineKind::Refunded,
        "refund_failure" => LineKind::RefundReversed,
        "partial_capture_reversal" => LineKind::CaptureReversed,
        "dispute" => LineKind::Chargeback,
        "dispute_reversal" => LineKind::ChargebackReversed,
        "fee" => LineKind::Fee,
        "payout" => LineKind::Payout,
        _ => LineKind::Unmapped,
    }
}

/// Columns whose values are Stripe's own identifiers (`ch_…`, `txn_…`) or amounts: never a card number.
const NOT_SCANNED: &[&str] = &["gross", "fee", "net", "customer_facing_amount", "created_utc", "available_on_utc"];

/// Parses one itemized report file. `file` names it in errors.
pub fn parse(file: &str, bytes: &[u8], options: &Options) -> Result<Report, Refused> {
    let row = |h: &Header, r: &csv::StringRecord, line, e: &mut Errors| parse_row(h, r, line, options, e);
    let columns = report::Columns { known: &documented, required: REQUIRED, not_scanned: NOT_SCANNED };
    report::parse_with(file, bytes, Psp::Stripe, columns, &row)
}

fn parse_row(
    header: &Header,
    row: &csv::StringRecord,
    line: u64,
    options: &Options,
    errors: &mut Errors,
) -> Option<SettlementLine> {
    let before = errors.total();
    let need = |errors: &mut Errors, column: &str| -> String {
        header.get(row, column).map(str::to_owned).unwrap_or_else(|| {
            errors.push(line, Some(column), "empty: this column is required on every line");
            String::new()
        })
    };
    let id = need(errors, "balance_transaction_id");
    let category = need(errors, "reporting_category");
    let created = need(errors, "created_utc");
    let currency = need(errors, "currency");
    let amounts = [need(errors, "gross"), need(errors, "fee"), need(errors, "net")];
    if errors.total() > before {
        return None;
    }
    let currency = match report::currency(&currency) {
        Ok(c) => c,
        Err(e) => {
            errors.push(line, Some("currency"), e);
            return None;
        }
    };
    let booked_at = match report::local_datetime(&created, 0) {
        Ok(t) => t,
        Err(e) => {
            errors.push(line, Some("created_utc"), e);
            return None;
        }
    };
    let settled_at = match header.get(row, "available_on_utc").map(|v| report::local_datetime(v, 0)) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.push(line, Some("available_on_utc"), e);
            return None;
        }
    };
    let mut money = [Amount::ZERO; 3];
    for ((column, value), slot) in ["gross", "fee", "net"].iter().zip(&amounts).zip(&mut money) {
        match parse_major_in(value, currency, options.decimal_separator, ExponentScheme::Stripe) {
            Ok(a) => *slot = a,
            Err(e) => errors.push(line, Some(column), e.to_string()),
        }
    }
    if errors.total() > before {
        return None;
    }
    let [gross, fee, net] = money;
    let (gross, net) = (Money::new(gross, currency), Money::new(net, currency));
    if let Err(e) = report::check_net(Some(gross), fee, net) {
        errors.push(line, Some("net"), e);
        return None;
    }
    let kind = kind(&category);
    let source = header.get(row, "source_id").map(str::to_owned);
    // The payment: the charge the line is about; a charge line's source is the charge itself.
    let charge = header.get(row, "charge_id").map(str::to_owned);
    let payment_reference = charge.or_else(|| (kind == LineKind::Settled).then(|| source.clone()).flatten());
    Some(SettlementLine {
        psp: Psp::Stripe,
        line,
        kind,
        category,
        account: options.account.clone(),
        line_id: Some(id),
        payment_reference,
        modification_reference: source,
        merchant_reference: None,
        gross: Some(gross),
        fee,
        net,
        booked_at,
        settled_at,
        batch: header.get(row, "automatic_payout_id").map(str::to_owned),
    })
}
