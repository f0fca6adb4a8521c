//! Settlement reports (DESIGN §12): what the PSPs say moved, line by line. The parts both PSPs' parsers share —
//! the typed line, the error that names file, line and column, the header read by name, the file's identity — live
//! here; each PSP's format is in its own `report` module beside `wire`, `verify` and `normalize`.
//!
//! Both parsers are strict in the same ways: columns are found **by header name, never by position** (any order,
//! extra columns ignored and counted), money goes through the currency's exponent with excess precision refused,
//! `net = gross − fee` is checked where one currency holds all three, a field that looks like a card number refuses
//! the line (the number is never shown), and a file with any error is refused whole with every error listed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sha2::{Digest, Sha256};
use tally_domain::{pan, Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Amount, Currency, Money};

/// What a report line says happened, in Tally's words; the PSP's own word is kept in [`SettlementLine::category`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A captured payment's funds settled to the merchant account's balance (Stripe `charge`, Adyen `Settled`).
    Settled,
    /// A refund left the balance (Stripe `refund`, Adyen `Refunded`).
    Refunded,
    /// A refund that failed came back (Stripe `refund_failure`, Adyen `RefundedReversed`).
    RefundReversed,
    /// A partial capture's uncaptured remainder released (Stripe `partial_capture_reversal`).
    CaptureReversed,
    /// Disputed funds withdrawn (Stripe `dispute`, Adyen `Chargeback`, `SecondChargeback`).
    Chargeback,
    /// Disputed funds returned (Stripe `dispute_reversal`, Adyen `ChargebackReversed`).
    ChargebackReversed,
    /// A fee not attached to one payment's settlement (Stripe `fee`, Adyen `Fee`, `MiscCosts`, `PaymentCost`, …).
    Fee,
    /// Funds paid out of the balance to a bank account (Stripe `payout`, Adyen `MerchantPayout`).
    Payout,
    /// A category Tally does not map (yet): kept, counted per category in [`Report::unmapped`], never dropped.
    Unmapped,
}

impl LineKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LineKind::Settled => "settled",
            LineKind::Refunded => "refunded",
            LineKind::RefundReversed => "refund_reversed",
            LineKind::CaptureReversed => "capture_reversed",
            LineKind::Chargeback => "chargeback",
            LineKind::ChargebackReversed => "chargeback_reversed",
            LineKind::Fee => "fee",
            LineKind::Payout => "payout",
            LineKind::Unmapped => "unmapped",
        }
    }
}

/// One line of a settlement report, in integer minor units (ISO 4217) with signs as the PSP's balance saw them:
/// credits positive, debits negative, and `net = gross − fee`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettlementLine {
    pub psp: Psp,
    /// The physical line in the file (the header is line 1).
    pub line: u64,
    pub kind: LineKind,
    /// The PSP's own category (Stripe `reporting_category`, Adyen `Type`).
    pub category: String,
    /// The PSP account whose balance this is (Adyen `Merchant Account`; for Stripe, the account the report was run for).
    pub account: String,
    /// The PSP's id of this balance movement where it has one (Stripe `balance_transaction_id`).
    pub line_id: Option<String>,
    /// The payment it concerns, as the PSP names it (Stripe `charge_id`, else the `source_id` of a charge; Adyen
    /// `Psp Reference`).
    pub payment_reference: Option<String>,
    /// The modification it concerns (Stripe `source_id`: `re_…`, `dp_…`, `po_…`; Adyen `Modification Reference`).
    pub modification_reference: Option<String>,
    pub merchant_reference: Option<String>,
    /// Signed gross; none on lines that carry only a net amount (Adyen fee and payout rows).
    pub gross: Option<Money>,
    /// The PSP's fees on this line, positive = charged, in `net`'s currency.
    pub fee: Amount,
    pub net: Money,
    /// When the PSP booked the line, in UTC (Stripe `created_utc`, Adyen `Creation Date`).
    pub booked_at: Timestamp,
    /// When the funds became available in the balance, where the report says (Stripe `available_on_utc`, Adyen
    /// `Booking Date`): what a settlement SLA is judged by.
    pub settled_at: Option<Timestamp>,
    /// The batch or payout the line belongs to (Adyen `Batch Number`; Stripe `automatic_payout_id`).
    pub batch: Option<String>,
}

impl SettlementLine {
    /// The line's identity: the same identity twice is one line stated twice (a duplicated line at the PSP, or the
    /// same line in a second file). Stripe: the balance transaction; Adyen: account, type, references, batch and
    /// creation time (two stages of one dispute may share type, references and batch: their times tell them apart).
    pub fn identity(&self) -> String {
        match &self.line_id {
            Some(id) => format!("{}|{id}", self.psp.as_str()),
            None => format!(
                "{}|{}|{}|{}|{}|{}|{}",
                self.psp.as_str(),
                self.account,
                self.category,
                self.payment_reference.as_deref().unwrap_or(""),
                self.modification_reference.as_deref().unwrap_or(""),
                self.batch.as_deref().unwrap_or(""),
                self.booked_at.unix_micros()
            ),
        }
    }

    /// The facts this line books (ADR 0015 §4), none for a category Tally does not map (kept and counted, not
    /// booked). One rule: the PSP balance (`cash:{psp}`) moves by the net, the receivable by the gross, the rest is
    /// the PSP's fee — so the line's own fact is [`EventKind::SettledCredit`] (gross credited),
    /// [`EventKind::SettledDebit`] (gross taken, or a fee line's fee) or [`EventKind::SettledPayout`]. Its identity
    /// is the line's, so a line stated twice (in one file or two) is one fact; lineage is `source_event_id` =
    /// `{file SHA-256}:{line}`. The line's own fact comes first.
    ///
    /// A line settled across currencies (Adyen: the gross in the payment's currency, net and fees in the
    /// settlement currency) is booked in the net currency with the converted gross `net + fee`, and two more facts
    /// move the receivable between the currencies through `fx_conversion:{psp}` ([`EventKind::ConversionOut`] in
    /// the currency it leaves, [`EventKind::ConversionIn`] in the one it arrives in), so that the receivable of
    /// each currency settles to zero and the conversion's gain or loss stays visible on `fx_conversion:{psp}`.
    ///
    /// Refused (the line stays stored and matched, the refusal is reported with file and line): a sign the category
    /// cannot have, a debit line without a gross, a conversion whose two sides differ in sign, and anything the
    /// ledger would refuse. One exception to the rule: Stripe states a dispute's fee on the
    /// dispute's balance transaction, and the webhook books that fee already (a `fee` fact against the
    /// receivable), so a Stripe dispute line settles its whole net against the receivable.
    pub fn facts(&self, file_sha256: &str, received_at: Timestamp) -> Result<Vec<PaymentEvent>, NotBooked> {
        let net = self.net.amount.minor();
        let refuse = |reason: String| NotBooked { line: self.line, reason };
        // In the net's currency: a line's gross is its net plus its fee (checked at parsing where one currency
        // holds all three; the definition of the converted gross where it does not).
        let settles_gross = matches!(
            self.kind,
            LineKind::Settled
                | LineKind::RefundReversed
                | LineKind::ChargebackReversed
                | LineKind::Refunded
                | LineKind::CaptureReversed
                | LineKind::Chargeback
        );
        let conversion = self.gross.filter(|g| g.currency != self.net.currency && settles_gross);
        let gross = match (self.gross, conversion) {
            (_, Some(g)) => {
                let converted =
                    net.checked_add(self.fee.minor()).ok_or_else(|| refuse("net + fee overflows".into()))?;
                if self.psp == Psp::Stripe {
                    return Err(refuse(format!(
                        "gross in {} and net in {}: a Stripe balance transaction states one currency",
                        g.currency.code(),
                        self.net.currency.code()
                    )));
                }
                if g.amount.is_zero() || (g.amount.minor() > 0) != (converted > 0) {
                    return Err(refuse(format!(
                        "gross {} {} and converted gross (net + fee) {converted} {}: a conversion keeps the sign",
                        g.amount.minor(),
                        g.currency.code(),
                        self.net.currency.code()
                    )));
                }
                Some(converted)
            }
            (Some(g), None) => Some(g.amount.minor()),
            (None, _) => None,
        };
        let sign = |what: &str| refuse(format!("a {} line ({}) that {what}", self.kind.as_str(), self.category));
        let (kind, amount, fee) = match self.kind {
            LineKind::Unmapped => return Ok(Vec::new()),
            LineKind::Settled | LineKind::RefundReversed | LineKind::ChargebackReversed => {
                let gross = gross.ok_or_else(|| sign("has no gross"))?;
                if gross <= 0 {
                    return Err(sign("does not credit the balance"));
                }
                (EventKind::SettledCredit, gross, gross - net)
            }
            LineKind::Fee => {
                if net >= 0 {
                    return Err(sign("does not debit the balance"));
                }
                (EventKind::SettledDebit, 0, -net)
            }
            LineKind::Refunded | LineKind::CaptureReversed | LineKind::Chargeback => {
                let gross = gross.ok_or_else(|| sign("has no gross"))?;
                if gross >= 0 || net >= 0 {
                    return Err(sign("does not debit the balance"));
                }
                if self.psp == Psp::Stripe && self.kind == LineKind::Chargeback {
                    (EventKind::SettledDebit, -net, 0)
                } else {
                    (EventKind::SettledDebit, -gross, gross - net)
                }
            }
            LineKind::Payout => {
                if net >= 0 {
                    return Err(sign("does not debit the balance"));
                }
                // A connected account's payout pays the merchant (its bank): the very fact the `payout.paid`
                // webhook states, under its identity, so that the ledger books it once whichever comes first.
                let connected = self.psp == Psp::Stripe && self.account != crate::stripe::PLATFORM_MERCHANT;
                match (connected, &self.modification_reference) {
                    (true, Some(po)) => {
                        let event = PaymentEvent {
                            kind: EventKind::Payout,
                            payment_id: format!("stripe:{po}"),
                            psp: Psp::Stripe,
                            psp_reference: po.clone(),
                            original_reference: None,
                            merchant_id: self.account.clone(),
                            money: Money::new(Amount::from_minor(-net), self.net.currency),
                            fee: None,
                            occurred_at: self.booked_at,
                            received_at,
                            source: Source::SettlementReport,
                            source_event_id: format!("{file_sha256}:{}", self.line),
                            attributes: Attributes { reason: Some(self.category.clone()), ..Attributes::default() },
                        };
                        return Ok(vec![event]);
                    }
                    (true, None) => return Err(sign("names no payout (no source_id)")),
                    (false, _) => (EventKind::SettledPayout, -net, 0),
                }
            }
        };
        let identity = self.identity();
        let event = PaymentEvent {
            kind,
            payment_id: match &self.payment_reference {
                Some(p) => format!("{}:{p}", self.psp.as_str()),
                None => format!("{}:{}", self.psp.as_str(), self.account),
            },
            psp: self.psp,
            psp_reference: identity,
            original_reference: self.payment_reference.clone(),
            merchant_id: self.account.clone(),
            money: Money::new(Amount::from_minor(amount), self.net.currency),
            fee: (kind != EventKind::SettledPayout).then_some(Amount::from_minor(fee)),
            occurred_at: self.booked_at,
            received_at,
            source: Source::SettlementReport,
            source_event_id: format!("{file_sha256}:{}", self.line),
            attributes: Attributes { reason: Some(self.category.clone()), ..Attributes::default() },
        };
        let mut facts = vec![event];
        if let Some(g) = conversion {
            // Credit: the receivable leaves the gross currency and arrives in the net's, where the line's fact
            // settles it. Debit: the other way round.
            let main = facts[0].clone();
            let (from, to) = (g, Money::new(Amount::from_minor(gross.unwrap_or(0)), self.net.currency));
            let leg = |kind: EventKind, money: Money| PaymentEvent {
                kind,
                psp_reference: format!("{}|conversion:{}", main.psp_reference, money.currency.code()),
                money: Money::new(Amount::from_minor(money.amount.minor().abs()), money.currency),
                fee: None,
                ..main.clone()
            };
            let (out, into) = if g.amount.minor() > 0 { (from, to) } else { (to, from) };
            facts.push(leg(EventKind::ConversionOut, out));
            facts.push(leg(EventKind::ConversionIn, into));
        }
        for event in &facts {
            tally_domain::ledger::check_bookable(event)
                .map_err(|e| refuse(format!("the ledger would refuse it: {e}")))?;
        }
        Ok(facts)
    }
}

/// Why a stored report line is not booked: reported with its file and line on import, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}: not booked: {reason}")]
pub struct NotBooked {
    pub line: u64,
    pub reason: String,
}

/// One reason a file is refused, where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportError {
    pub file: String,
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{}:{}: column {c:?}: {}", self.file, self.line, self.reason),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.reason),
        }
    }
}

/// A file refused whole: nothing of it is imported. Every error is listed (up to [`Refused::MAX_LISTED`], with the
/// total count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{} refused ({total} error(s)); first: {}", .file, .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct Refused {
    pub file: String,
    pub errors: Vec<ReportError>,
    pub total: usize,
}

impl Refused {
    pub const MAX_LISTED: usize = 100;
}

/// A parsed report: its identity, its lines, and what the parser saw but does not use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub psp: Psp,
    pub file: String,
    /// The file's SHA-256 (hex): its identity. The same bytes imported twice are one file.
    pub sha256: String,
    pub lines: Vec<SettlementLine>,
    /// Header names the parser does not know, in file order: ignored, and reported.
    pub unknown_columns: Vec<String>,
    /// Lines whose category Tally does not map, counted per category.
    pub unmapped: BTreeMap<String, u64>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Collects errors for one file and builds the result: a [`Report`] only when there were none.
pub(crate) struct Errors {
    file: String,
    errors: Vec<ReportError>,
    total: usize,
}

impl Errors {
    pub(crate) fn new(file: &str) -> Errors {
        Errors { file: file.to_owned(), errors: Vec::new(), total: 0 }
    }

    pub(crate) fn push(&mut self, line: u64, column: Option<&str>, reason: impl Into<String>) {
        self.total += 1;
        if self.errors.len() < Refused::MAX_LISTED {
            self.errors.push(ReportError {
                file: self.file.clone(),
                line,
                column: column.map(str::to_owned),
                reason: crate::error::clean(&reason.into()),
            });
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn refused(self) -> Refused {
        Refused { file: self.file, errors: self.errors, total: self.total }
    }
}

/// The header row: each known column's position, by name.
pub(crate) struct Header {
    positions: HashMap<String, usize>,
    pub(crate) unknown: Vec<String>,
    pub(crate) width: usize,
}

impl Header {
    /// Reads a header row. `known` says which names the parser understands (a name it does not is counted, not an
    /// error); every name in `required` must be present, else the file is refused naming each missing column.
    pub(crate) fn read(
        row: &csv::StringRecord,
        known: impl Fn(&str) -> bool,
        required: &[&str],
        errors: &mut Errors,
    ) -> Header {
        let mut positions = HashMap::new();
        let mut unknown = Vec::new();
        for (i, name) in row.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').trim();
            if positions.insert(name.to_owned(), i).is_some() {
                errors.push(1, Some(name), "column appears twice in the header");
            }
            if !known(name) {
                unknown.push(name.to_owned());
            }
        }
        for r in required {
            if !positions.contains_key(*r) {
                errors.push(1, Some(r), "required column missing from the header");
            }
        }
        Header { positions, unknown, width: row.len() }
    }

    /// The field of `column` in `row`, trimmed; `None` when the column is absent or the field empty.
    pub(crate) fn get<'r>(&self, row: &'r csv::StringRecord, column: &str) -> Option<&'r str> {
        let i = *self.positions.get(column)?;
        row.get(i).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// Reads `bytes` as CSV rows with their physical line numbers. A row whose field count differs from the header's
/// is a truncated or shifted line, refused (the header is the first row returned).
pub(crate) fn rows(bytes: &[u8], errors: &mut Errors) -> Vec<(u64, csv::StringRecord)> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
                    continue; // a blank line (often the last)
                }
                out.push((line, record.clone()));
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                errors.push(line, None, format!("not readable as CSV: {e}"));
                break;
            }
        }
    }
    out
}

/// Refuses a field that looks like a card number (I7): the column is named, the digits never.
pub(crate) fn scan_pan(errors: &mut Errors, line: u64, column: &str, value: &str) {
    if let Some(m) = pan::scan(value.as_bytes()).first() {
        errors.push(
            line,
            Some(column),
            format!(
                "holds a {}-digit number that looks like a {} card number; refused, not shown",
                m.digits, m.network
            ),
        );
    }
}

/// `YYYY-MM-DD HH:MM:SS` at a UTC offset in minutes, to a timestamp.
pub(crate) fn local_datetime(value: &str, offset_minutes: i32) -> Result<Timestamp, String> {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b' '
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shaped {
        return Err(format!("{value:?} is not a date and time as YYYY-MM-DD HH:MM:SS"));
    }
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
    let rfc3339 = format!("{}T{}{sign}{h:02}:{m:02}", &value[..10], &value[11..]);
    Timestamp::parse_rfc3339(&rfc3339).map_err(|e| format!("{value:?}: {e}"))
}

/// Checks `net = gross − fee` where one currency holds all three.
pub(crate) fn check_net(gross: Option<Money>, fee: Amount, net: Money) -> Result<(), String> {
    let Some(gross) = gross.filter(|g| g.currency == net.currency) else { return Ok(()) };
    match gross.amount.checked_sub(fee) {
        Ok(expected) if expected == net.amount => Ok(()),
        Ok(expected) => Err(format!(
            "net {} is not gross {} minus fee {} (= {}) in {}",
            net.amount.minor(),
            gross.amount.minor(),
            fee.minor(),
            expected.minor(),
            net.currency.code()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A currency by its code, or the error to record.
pub(crate) fn currency(value: &str) -> Result<Currency, String> {
    Currency::from_code(value).map_err(|e| e.to_string())
}

/// A format's columns: which names it knows, which it requires, which hold identifiers never scanned for cards.
pub(crate) struct Columns<'a> {
    pub known: &'a dyn Fn(&str) -> bool,
    pub required: &'a [&'a str],
    pub not_scanned: &'a [&'a str],
}

/// The part both parsers share: rows with their line numbers, the header by name, field counts, the card-number
/// scan of every column not in `not_scanned`, then `parse_row` per line; a row counts only when it added no error.
/// Any error refuses the file.
pub(crate) fn parse_with(
    file: &str,
    bytes: &[u8],
    psp: Psp,
    columns: Columns<'_>,
    parse_row: &dyn Fn(&Header, &csv::StringRecord, u64, &mut Errors) -> Option<SettlementLine>,
) -> Result<Report, Refused> {
    let mut errors = Errors::new(file);
    let rows = rows(bytes, &mut errors);
    let Some((_, header_row)) = rows.first() else {
        errors.push(1, None, "empty file: no header row");
        return Err(errors.refused());
    };
    let header = Header::read(header_row, columns.known, columns.required, &mut errors);
    if !errors.is_empty() {
        return Err(errors.refused());
    }
    let (mut lines, mut unmapped) = (Vec::new(), BTreeMap::new());
    for (line, row) in &rows[1..] {
        let line = *line;
        if row.len() != header.width {
            errors.push(line, None, format!("{} fields where the header has {}", row.len(), header.width));
            continue;
        }
        for (i, value) in row.iter().enumerate() {
            let column = header_row.get(i).unwrap_or_default();
            if !columns.not_scanned.contains(&column) {
                scan_pan(&mut errors, line, column, value);
            }
        }
        let before = errors.total();
        match parse_row(&header, row, line, &mut errors) {
            Some(parsed) if errors.total() == before => {
                if parsed.kind == LineKind::Unmapped {
                    *unmapped.entry(parsed.category.clone()).or_insert(0) += 1;
                }
                lines.push(parsed);
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors.refused());
    }
    Ok(Report {
        psp,
        file: file.to_owned(),
        sha256: sha256_hex(bytes),
        lines,
        unknown_columns: header.unknown,
        unmapped,
    })
}
