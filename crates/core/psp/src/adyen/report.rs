//! Adyen's Settlement details report (docs.adyen.com/reporting/settlement-reconciliation/transaction-level/
//! settlement-details-report; `../shared/fixtures/reports/`): one CSV per settlement batch. Adyen has added columns
//! at the end and renamed reserved ones over the years (the 23-column layout of its docs, the 49-column header of
//! 2026), so columns are read **by header name**; names Tally does not know are counted and ignored.
//!
//! Amounts are decimal **major** units split into debit and credit columns: `Gross Debit (GC)` / `Gross Credit (GC)`
//! in the gross currency, `Net Debit (NC)` / `Net Credit (NC)` and the fee components `Commission (NC)`,
//! `Markup (NC)`, `Scheme Fees (NC)`, `Interchange (NC)` in the net currency. Adyen's own exponent applies where it
//! differs from ISO 4217 (IDR 0, CLP 2, …): a fraction finer than either is refused. An empty fee component is no
//! such fee (the format's way of writing zero, as in Adyen's sample rows), and the line's arithmetic — net = gross −
//! the sum of the fees, when gross and net share a currency — must hold, so a missing fee cannot pass unnoticed.
//! `Creation Date` is `YYYY-MM-DD HH:MM:SS` in the row's `TimeZone` (`CET`, `PDT`, …), converted to UTC here; an
//! abbreviation that names two zones (IST, CST) is refused rather than guessed.

use tally_domain::Psp;
use tally_money::{parse_major_in, Amount, Currency, DecimalSeparator, ExponentScheme, Money};

use crate::report::{self, Errors, Header, LineKind, Refused, Report, SettlementLine};

/// Columns Tally needs in the header (a row may leave some empty where its type has no such value).
pub const REQUIRED: &[&str] = &[
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
];

/// Every column of the 2026 header (`adyen_settlement_details_header_2026.csv`), which includes the docs' layout.
pub const DOCUMENTED: &[&str] = &[
    "Company Account",
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Payment Method",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Exchange Rate",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
    "Payment Method Variant",
    "Modification Merchant Reference",
    "Batch Number",
    "Reserved4",
    "Reserved5",
    "Reserved6",
    "Reserved7",
    "Reserved8",
    "Reserved9",
    "Reserved10",
    "Booking Date",
    "Booking Date TimeZone",
    "Metadata",
    "Balance Currency",
    "Net Debit (BC)",
    "Net Credit (BC)",
    "Payment Fees (NC)",
    "DCC Markup (NC)",
    "Funds Destination",
    "Balance Platform Debit",
    "Balance Platform Credit",
    "Shopper Country",
    "Clearing Network",
    "Merchant Order Reference",
    "Dispute Reference",
    "ARN",
    "Settlement Flow",
    "Authorisation Code",
    "Gross Fees (NC)",
];

/// The fee components whose sum is the line's fee.
const FEES: &[&str] = &["Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)"];

/// Columns that hold Adyen's or the networks' own identifiers (16-digit PSP references pass the card-number checks
/// by chance), amounts and dates: not scanned for card numbers. Everything a person could type is.
const NOT_SCANNED: &[&str] = &[
    "Psp Reference",
    "Modification Reference",
    "Batch Number",
    "Dispute Reference",
    "ARN",
    "Authorisation Code",
    "Creation Date",
    "Booking Date",
    "Exchange Rate",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
    "Net Debit (BC)",
    "Net Credit (BC)",
    "Payment Fees (NC)",
    "DCC Markup (NC)",
    "Gross Fees (NC)",
    "Balance Platform Debit",
    "Balance Platform Credit",
];

/// Record types (the fixtures' list from Adyen's docs and parsers) that Tally maps.
fn kind(record_type: &str) -> LineKind {
    match record_type {
        "Settled" => LineKind::Settled,
        "Refunded" => LineKind::Refunded,
        "RefundedReversed" => LineKind::RefundReversed,
        "Chargeback" | "SecondChargeback" => LineKind::Chargeback,
        "ChargebackReversed" => LineKind::ChargebackReversed,
        "Fee" | "MiscCosts" | "PaymentCost" | "SettleCost" | "AuthorisationSchemeFee" => LineKind::Fee,
        "MerchantPayout" => LineKind::Payout,
        _ => LineKind::Unmapped,
    }
}

/// UTC offsets (minutes) of the zone abbreviations a report may carry. Ambiguous ones (IST: India, Ireland,
/// Israel; CST: China, US Central, Cuba) are absent on purpose: refused, never guessed. BST is British Summer Time.
pub const TIME_ZONES: &[(&str, i32)] = &[
    ("UTC", 0),
    ("GMT", 0),
    ("WET", 0),
    ("WEST", 60),
    ("BST", 60),
    ("CET", 60),
    ("CEST", 120),
    ("EET", 120),
    ("EEST", 180),
    ("MSK", 180),
    ("SGT", 480),
    ("HKT", 480),
    ("AWST", 480),
    ("JST", 540),
    ("KST", 540),
    ("AEST", 600),
    ("AEDT", 660),
    ("NZST", 720),
    ("NZDT", 780),
    ("BRT", -180),
    ("ART", -180),
    ("EST", -300),
    ("EDT", -240),
    ("CDT", -300),
    ("MST", -420),
    ("MDT", -360),
    ("PST", -480),
    ("PDT", -420),
    ("AKST", -540),
    ("AKDT", -480),
    ("HST", -600),
];

fn offset(zone: &str) -> Option<i32> {
    TIME_ZONES.iter().find(|(z, _)| *z == zone).map(|(_, o)| *o)
}

/// Parses one Settlement details report. `file` names it in errors; `batch`, when given (the batch number from
/// the file's name, as Adyen names them `settlement_detail_report_batch_N`), fills rows whose `Batch Number` is
/// empty and must agree with rows that have one.
pub fn parse(file: &str, bytes: &[u8], batch: Option<u64>) -> Result<Report, Refused> {
    let known = |n: &str| DOCUMENTED.contains(&n);
    let row = |h: &Header, r: &csv::StringRecord, line, e: &mut Errors| parse_row(h, r, line, batch, e);
    let columns = report::Columns { known: &known, required: REQUIRED, not_scanned: NOT_SCANNED };
    report::parse_with(file, bytes, Psp::Adyen, columns, &row)
}

fn parse_row(
    header: &Header,
    row: &csv::StringRecord,
    line: u64,
    batch: Option<u64>,
    errors: &mut Errors,
) -> Option<SettlementLine> {
    let get = |column: &str| header.get(row, column);
    let mut need = |column: &str| -> Option<String> {
        let v = get(column).map(str::to_owned);
        if v.is_none() {
            errors.push(line, Some(column), "empty: this column is required on every line");
        }
        v
    };
    let (account, record_type, created, zone) =
        (need("Merchant Account"), need("Type"), need("Creation Date"), need("TimeZone"));
    let (account, record_type, created, zone) = (account?, record_type?, created?, zone?);
    let booked_at = match offset(&zone) {
        None => {
            errors.push(line, Some("TimeZone"), format!("{zone:?} is not a time zone Tally can place unambiguously"));
            return None;
        }
        Some(minutes) => match report::local_datetime(&created, minutes) {
            Ok(t) => t,
            Err(e) => {
                errors.push(line, Some("Creation Date"), e);
                return None;
            }
        },
    };
    // The booking into the batch, in its own zone column; without a zone it cannot be placed.
    let settled_at = match (get("Booking Date"), get("Booking Date TimeZone")) {
        (None, _) => None,
        (Some(_), None) => {
            errors.push(line, Some("Booking Date TimeZone"), "a booking date without its time zone");
            return None;
        }
        (Some(date), Some(zone)) => match offset(zone) {
            None => {
                errors.push(
                    line,
                    Some("Booking Date TimeZone"),
                    format!("{zone:?} is not a time zone Tally can place unambiguously"),
                );
                return None;
            }
            Some(minutes) => match report::local_datetime(date, minutes) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(line, Some("Booking Date"), e);
                    return None;
                }
            },
        },
    };
    // Ok(None): the column is empty; Err: its code is refused (recorded once, not again for each amount).
    let currency_of = |errors: &mut Errors, column: &str| -> Result<Option<Currency>, ()> {
        let Some(code) = get(column) else { return Ok(None) };
        report::currency(code).map(Some).map_err(|e| errors.push(line, Some(column), e))
    };
    let amount = |errors: &mut Errors, column: &str, currency: Result<Option<Currency>, ()>| -> Option<Amount> {
        let value = get(column)?;
        let Ok(currency) = currency else { return None };
        let Some(currency) = currency else {
            errors.push(line, Some(column), "an amount without its currency column");
            return None;
        };
        parse_major_in(value, currency, DecimalSeparator::Dot, ExponentScheme::Adyen)
            .map_err(|e| errors.push(line, Some(column), e.to_string()))
            .ok()
    };
    // credit − debit: credits are positive, as the balance saw them. Both present on one row is not a line.
    let signed =
        |errors: &mut Errors, debit: &str, credit: &str, currency: Result<Option<Currency>, ()>| -> Option<Amount> {
            let (d, c) = (amount(errors, debit, currency), amount(errors, credit, currency));
            match (d, c) {
                (Some(_), Some(_)) => {
                    errors.push(line, Some(credit), format!("both {debit:?} and {credit:?} hold an amount"));
                    None
                }
                (Some(d), None) => d.checked_neg().ok(),
                (None, Some(c)) => Some(c),
                (None, None) => None,
            }
        };
    let gross_currency = currency_of(errors, "Gross Currency");
    let net_currency = currency_of(errors, "Net Currency");
    let gross = signed(errors, "Gross Debit (GC)", "Gross Credit (GC)", gross_currency);
    let Some(net) = signed(errors, "Net Debit (NC)", "Net Credit (NC)", net_currency) else {
        if get("Net Debit (NC)").is_none() && get("Net Credit (NC)").is_none() {
            errors.push(line, Some("Net Credit (NC)"), "neither net debit nor net credit holds an amount");
        }
        return None;
    };
    let net_currency = net_currency.ok()??;
    let mut fee = Amount::ZERO;
    for column in FEES {
        if let Some(a) = amount(errors, column, Ok(Some(net_currency))) {
            fee = fee.checked_add(a).map_err(|e| errors.push(line, Some(column), e.to_string())).ok()?;
        }
    }
    let gross = gross.zip(gross_currency.ok().flatten()).map(|(a, c)| Money::new(a, c));
    let net = Money::new(net, net_currency);
    if let Err(e) = report::check_net(gross, fee, net) {
        errors.push(line, Some("Net Credit (NC)"), e);
        return None;
    }
    let row_batch = get("Batch Number").map(str::to_owned);
    let batch = match (row_batch, batch) {
        (Some(b), Some(named)) if b != named.to_string() => {
            errors.push(line, Some("Batch Number"), format!("batch {b} in a file named for batch {named}"));
            return None;
        }
        (Some(b), _) => Some(b),
        (None, named) => named.map(|n| n.to_string()),
    };
    let kind = kind(&record_type);
    Some(SettlementLine {
        psp: Psp::Adyen,
        line,
        kind,
        category: record_type,
        account,
        line_id: None,
        payment_reference: get("Psp Reference").map(str::to_owned),
        modification_reference: get("Modification Reference").map(str::to_owned),
        merchant_reference: get("Merchant Reference").map(str::to_owned),
        gross,
        fee,
        net,
        booked_at,
        settled_at,
        batch,
    })
}
