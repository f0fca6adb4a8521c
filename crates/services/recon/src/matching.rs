//! Matching settlement report lines to ledger facts (ADR 0015 §2–§3). Pure: the same lines and facts, in any order
//! and however batched, give the same breaks and totals (inputs are put in a canonical order first; property test).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use tally_domain::{EventKind, Psp, Timestamp};
use tally_money::{Amount, Money};
use tally_psp::report::{LineKind, SettlementLine};

/// A report line with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub file_sha256: String,
    pub file: String,
    pub line: SettlementLine,
}

/// Where a ledger fact came from: its Kafka coordinates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FactLineage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The parts of a booked fact that matching reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    pub fact_key: String,
    pub kind: EventKind,
    pub psp: Psp,
    pub payment_id: String,
    pub psp_reference: String,
    pub merchant_id: String,
    pub money: Money,
    pub occurred_at: Timestamp,
    pub lineage: FactLineage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    MissingInLedger,
    MissingAtPsp,
    AmountMismatch,
    CurrencyMismatch,
    FeeMismatch,
    DuplicateLine,
    CategoryMismatch,
    MissingBatch,
}

impl BreakKind {
    pub const ALL: [BreakKind; 8] = [
        BreakKind::MissingInLedger,
        BreakKind::MissingAtPsp,
        BreakKind::AmountMismatch,
        BreakKind::CurrencyMismatch,
        BreakKind::FeeMismatch,
        BreakKind::DuplicateLine,
        BreakKind::CategoryMismatch,
        BreakKind::MissingBatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::MissingInLedger => "missing_in_ledger",
            BreakKind::MissingAtPsp => "missing_at_psp",
            BreakKind::AmountMismatch => "amount_mismatch",
            BreakKind::CurrencyMismatch => "currency_mismatch",
            BreakKind::FeeMismatch => "fee_mismatch",
            BreakKind::DuplicateLine => "duplicate_line",
            BreakKind::CategoryMismatch => "category_mismatch",
            BreakKind::MissingBatch => "missing_batch",
        }
    }
}

/// A report line's place: the file's SHA-256 and name, and the line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LineRef {
    pub file_sha256: String,
    pub file: String,
    pub line: u64,
}

/// One break, naming both sides where both exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub kind: BreakKind,
    pub psp: Psp,
    /// The payment concerned (`{psp}:{reference}`), where one is named.
    pub payment_id: Option<String>,
    pub line: Option<LineRef>,
    pub fact_key: Option<String>,
    pub fact: Option<FactLineage>,
    /// The money the break is about (the line's, else the fact's).
    pub amount: Option<Money>,
    pub detail: String,
}

impl Break {
    /// A stable id: the same break found by a later run has the same id (type, PSP, payment, the line's file and
    /// number, the fact, and for breaks with neither side, the detail). 16 hex digits of a SHA-256.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let line = self.line.as_ref().map_or(String::new(), |l| format!("{}:{}", l.file_sha256, l.line));
        let anchor = if self.line.is_none() && self.fact_key.is_none() { self.detail.as_str() } else { "" };
        let text = format!(
            "{}|{}|{}|{line}|{}|{anchor}",
            self.kind.as_str(),
            self.psp.as_str(),
            self.payment_id.as_deref().unwrap_or(""),
            self.fact_key.as_deref().unwrap_or("")
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }
}

/// A PSP's contracted price for a merchant: parts per million of the gross plus a fixed fee in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub ppm: u32,
    pub fixed_minor: i64,
}

impl Price {
    /// The fee on `gross` as the PSP charges it: percentage plus fixed part, rounded **once**, half away from zero,
    /// to the PSP's smallest unit in the currency (`unit` minor units: 100 where the PSP moves whole IDR, 1 mostly).
    pub fn fee(self, gross: Amount, unit: i64) -> Option<Amount> {
        let exact = i128::from(gross.minor().unsigned_abs()) * i128::from(self.ppm)
            + i128::from(self.fixed_minor).checked_mul(1_000_000)?;
        let step = i128::from(unit.max(1)) * 1_000_000;
        let rounded = (exact + step / 2) / step * i128::from(unit.max(1));
        i64::try_from(rounded).ok().map(Amount::from_minor)
    }
}

/// The smallest amount (in ISO minor units) a PSP moves in a currency: 10^(ISO exponent − the PSP's) where the PSP's
/// is smaller (Adyen: IDR and CVE without decimals; Stripe: MGA), else 1.
pub fn wire_unit(psp: Psp, currency: tally_money::Currency) -> i64 {
    let scheme = match psp {
        Psp::Stripe => tally_money::ExponentScheme::Stripe,
        Psp::Adyen => tally_money::ExponentScheme::Adyen,
    };
    10i64.pow(u32::from(currency.exponent().saturating_sub(currency.exponent_in(scheme))))
}

/// A nightly run's scope ([`scope_to_day`]): whose settlements are judged, and how far the imported reports reach.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Fact keys whose settlement is expected by this run (the day's facts).
    pub judged: BTreeSet<String>,
    /// The newest settlement time of every imported line, per PSP (not only the day's).
    pub coverage: BTreeMap<Psp, Timestamp>,
    /// Batch gaps, judged on every imported line (a day's lines would show gaps that are not there).
    pub batches: Vec<Break>,
}

/// Differences matching lets pass, in minor units, per PSP and break type (ADR 0015 §2: none unless configured).
/// Only money differences can be tolerated: `amount_mismatch` and `fee_mismatch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tolerances(BTreeMap<(Psp, BreakKind), i64>);

/// No tolerance at all (the default).
pub static NO_TOLERANCE: Tolerances = Tolerances(BTreeMap::new());

impl Tolerances {
    pub const TOLERABLE: [BreakKind; 2] = [BreakKind::AmountMismatch, BreakKind::FeeMismatch];

    /// Parses `psp:break_type=minor_units` (e.g. `adyen:fee_mismatch=1`).
    pub fn parse(specs: &[String]) -> Result<Tolerances, String> {
        let mut out = BTreeMap::new();
        for spec in specs {
            let bad =
                |why: &str| format!("tolerance {spec:?}: {why} (expected psp:amount_mismatch=N or psp:fee_mismatch=N)");
            let (key, value) = spec.split_once('=').ok_or_else(|| bad("no ="))?;
            let (psp, kind) = key.split_once(':').ok_or_else(|| bad("no psp:"))?;
            let psp: Psp = psp.parse().map_err(|e: String| bad(&e))?;
            let kind = Self::TOLERABLE
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or_else(|| bad("only amount and fee differences can be tolerated"))?;
            let minor: i64 = value.parse().map_err(|_| bad("not a whole number of minor units"))?;
            if minor < 0 {
                return Err(bad("negative"));
            }
            out.insert((psp, kind), minor);
        }
        Ok(Tolerances(out))
    }

    /// Whether a difference of `diff` minor units passes for this PSP and break type.
    pub fn allows(&self, psp: Psp, kind: BreakKind, diff: i64) -> bool {
        diff == 0 || self.0.get(&(psp, kind)).is_some_and(|t| diff.unsigned_abs() <= t.unsigned_abs())
    }
}

/// What matching needs besides lines and facts.
pub struct Rules<'a> {
    /// Business days (Monday–Friday) from a fact to its settlement, per PSP.
    pub sla_days: &'a dyn Fn(Psp) -> u32,
    /// The merchant's price with a PSP on a day (`None`: no plan known, no fee check).
    pub price: &'a dyn Fn(&str, Psp, Timestamp) -> Option<Price>,
    /// A nightly run for one day; `None`: everything given is judged.
    pub scope: Option<&'a Scope>,
    /// Differences let pass ([`NO_TOLERANCE`] by default).
    pub tolerances: &'a Tolerances,
}

/// Per PSP and currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Σ captured facts in scope.
    pub booked_minor: i64,
    /// Σ gross of the settled lines.
    pub settled_minor: i64,
    /// Σ fees of every line.
    pub fees_minor: i64,
    pub lines: u64,
    pub matched: u64,
    /// Of the matched, those whose amount or fee differs within a configured tolerance.
    pub within_tolerance: u64,
    pub broken: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub breaks: Vec<Break>,
    pub totals: BTreeMap<(String, String), Totals>,
    /// Lines of kinds matching does not pair with a fact (fees, payouts, unmapped categories), per kind.
    pub unpaired: BTreeMap<String, u64>,
    /// What was compared: report lines and ledger facts in scope.
    pub lines: usize,
    pub facts: usize,
    /// Lines matched by the fallback (the payment's one fact of the kind, no reference naming it).
    pub fallbacks: u64,
    /// Expectations still open: judged facts whose settlement is expected and not in any report (fact key, PSP,
    /// when it is due), whether or not the reports reach past the due time yet.
    pub open: Vec<(String, Psp, Timestamp)>,
}

impl Outcome {
    pub fn count(&self, kind: BreakKind) -> usize {
        self.breaks.iter().filter(|b| b.kind == kind).count()
    }

    /// Sorts the breaks and counts them into the totals again (after breaks were added or removed).
    pub fn recount(&mut self) {
        for t in self.totals.values_mut() {
            t.broken = 0;
        }
        for b in &self.breaks {
            let currency = b.amount.map_or_else(|| "-".to_owned(), |m| m.currency.code().to_owned());
            self.totals.entry((b.psp.as_str().to_owned(), currency)).or_default().broken += 1;
        }
        self.totals.retain(|(_, c), t| c != "-" || t.broken > 0);
        self.breaks.sort_by(|a, b| {
            (a.kind, a.psp, &a.payment_id, &a.line, &a.fact_key, &a.detail).cmp(&(
                b.kind,
                b.psp,
                &b.payment_id,
                &b.line,
                &b.fact_key,
                &b.detail,
            ))
        });
    }
}

/// The fact kinds a line kind settles.
fn settles(kind: &LineKind) -> &'static [EventKind] {
    match kind {
        LineKind::Settled => &[EventKind::Captured],
        LineKind::Refunded => &[EventKind::Refunded],
        LineKind::Chargeback => &[EventKind::ChargebackOpened, EventKind::SecondChargeback],
        LineKind::ChargebackReversed => &[EventKind::ChargebackWon, EventKind::PrearbitrationWon],
        LineKind::RefundReversed => &[EventKind::RefundFailed],
        _ => &[],
    }
}

/// The sign a line of this kind has on the PSP balance: +1 credits (settlements, returned disputes, failed refunds
/// coming back), −1 debits (refunds, disputes).
fn sign(kind: &LineKind) -> i64 {
    match kind {
        LineKind::Refunded | LineKind::Chargeback => -1,
        _ => 1,
    }
}

/// The fact kinds matching reads from the ledger.
pub const MATCHED_KINDS: &[EventKind] = &[
    EventKind::Captured,
    EventKind::CaptureReversed,
    EventKind::Refunded,
    EventKind::RefundFailed,
    EventKind::ChargebackOpened,
    EventKind::SecondChargeback,
    EventKind::ChargebackWon,
    EventKind::PrearbitrationWon,
];

/// The ledger's reference of a capture made again after a failed one (`{reference}#recaptured`, ADR 0004): the PSP
/// names it by the original reference.
const RECAPTURED: &str = "#recaptured";

/// The fact kinds that must be settled within the SLA.
pub const EXPECTED: &[EventKind] = &[EventKind::Captured, EventKind::Refunded];

/// `t` plus `days` business days (Monday–Friday).
pub fn add_business_days(t: Timestamp, days: u32) -> Timestamp {
    const DAY: i64 = 86_400_000_000;
    let mut micros = t.unix_micros();
    let mut left = days;
    while left > 0 {
        micros += DAY;
        // 1970-01-01 was a Thursday: weekday index 0 = Monday.
        let weekday = (micros.div_euclid(DAY) + 3).rem_euclid(7);
        if weekday < 5 {
            left -= 1;
        }
    }
    Timestamp::from_unix_micros(micros).unwrap_or(t)
}

pub fn reconcile(lines: &[Line], facts: &[Fact], rules: &Rules<'_>) -> Outcome {
    // Canonical order, so that input order cannot change which line is "the duplicate" or which fact a line takes.
    let mut lines: Vec<&Line> = lines.iter().collect();
    lines.sort_by(|a, b| {
        (a.line.booked_at, &a.file_sha256, a.line.line).cmp(&(b.line.booked_at, &b.file_sha256, b.line.line))
    });
    let mut facts: Vec<&Fact> = facts.iter().collect();
    facts.sort_by(|a, b| (a.occurred_at, &a.fact_key).cmp(&(b.occurred_at, &b.fact_key)));
    facts.dedup_by(|a, b| a.fact_key == b.fact_key);

    let mut out = Outcome { lines: lines.len(), facts: facts.len(), ..Outcome::default() };
    let mut by_payment: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_reference: HashMap<(Psp, &str), Vec<usize>> = HashMap::new();
    for (i, f) in facts.iter().enumerate() {
        by_payment.entry(f.payment_id.as_str()).or_default().push(i);
        let reference = f.psp_reference.strip_suffix(RECAPTURED).unwrap_or(&f.psp_reference);
        by_reference.entry((f.psp, reference)).or_default().push(i);
    }
    // A capture that failed, or a refund that failed, is not expected to settle (its reversal is in the ledger).
    let reversed: BTreeSet<(Psp, EventKind, &str)> = facts
        .iter()
        .filter_map(|f| match f.kind {
            EventKind::CaptureReversed => Some((f.psp, EventKind::Captured, f.psp_reference.as_str())),
            EventKind::RefundFailed => Some((f.psp, EventKind::Refunded, f.psp_reference.as_str())),
            _ => None,
        })
        .collect();
    let is_reversed = |f: &Fact| reversed.contains(&(f.psp, f.kind, f.psp_reference.as_str()));
    let named = |r: Option<&str>, f: &Fact| {
        r.is_some_and(|r| f.psp_reference == r || f.psp_reference.strip_suffix(RECAPTURED) == Some(r))
    };
    let mut as_of: BTreeMap<Psp, Timestamp> = BTreeMap::new();
    // Stripe writes a partial capture as a charge line for the whole authorization and a `partial_capture_reversal`
    // line for what was not captured: the charge settles their sum.
    let mut released: HashMap<String, i64> = HashMap::new();
    for l in lines.iter().filter(|l| l.line.kind == LineKind::CaptureReversed) {
        if let (Some(p), Some(g)) = (&l.line.payment_reference, l.line.gross) {
            *released.entry(format!("{}:{p}", l.line.psp.as_str())).or_default() += g.amount.minor();
        }
    }

    // Each line's payment: as it names it, or through the fact its modification reference names.
    let payment_of = |s: &SettlementLine| -> Option<String> {
        s.payment_reference.as_ref().map(|r| format!("{}:{r}", s.psp.as_str())).or_else(|| {
            let r = s.modification_reference.as_deref()?;
            by_reference.get(&(s.psp, r)).and_then(|v| v.first()).map(|&i| facts[i].payment_id.clone())
        })
    };
    let line_ref = |l: &Line| LineRef { file_sha256: l.file_sha256.clone(), file: l.file.clone(), line: l.line.line };
    let brk = |l: &Line, payment: &Option<String>, kind, detail: String, fact: Option<&Fact>| Break {
        kind,
        psp: l.line.psp,
        payment_id: payment.clone().or_else(|| fact.map(|f| f.payment_id.clone())),
        line: Some(line_ref(l)),
        fact_key: fact.map(|f| f.fact_key.clone()),
        fact: fact.map(|f| f.lineage.clone()),
        amount: l.line.gross.or(Some(l.line.net)),
        detail,
    };

    // 1. Duplicates by identity, totals, and exact matches by reference, in line order.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut taken: Vec<Option<usize>> = vec![None; facts.len()];
    let mut pending: Vec<(usize, Option<String>)> = Vec::new();
    let mut matched: Vec<(usize, usize, Option<String>)> = Vec::new();
    for (li, l) in lines.iter().enumerate() {
        let s = &l.line;
        let when = s.settled_at.unwrap_or(s.booked_at);
        let entry = as_of.entry(s.psp).or_insert(when);
        *entry = (*entry).max(when);
        let currency = s.gross.map_or(s.net.currency, |g| g.currency);
        let totals = out.totals.entry((s.psp.as_str().to_owned(), currency.code().to_owned())).or_default();
        totals.lines += 1;
        totals.fees_minor = totals.fees_minor.saturating_add(s.fee.minor());
        if s.kind == LineKind::Settled {
            totals.settled_minor = totals.settled_minor.saturating_add(s.gross.map_or(0, |g| g.amount.minor()));
        }
        let payment = payment_of(s);
        if !seen.insert(s.identity()) {
            out.breaks.push(brk(
                l,
                &payment,
                BreakKind::DuplicateLine,
                format!("the same {} line again", s.category),
                None,
            ));
            continue;
        }
        let kinds = settles(&s.kind);
        if kinds.is_empty() {
            *out.unpaired.entry(s.kind.as_str().to_owned()).or_insert(0) += 1;
            continue;
        }
        let candidates: &[usize] = payment.as_deref().and_then(|p| by_payment.get(p)).map_or(&[], Vec::as_slice);
        let modification = s.modification_reference.as_deref();
        let of_kind: Vec<usize> = candidates.iter().copied().filter(|&i| kinds.contains(&facts[i].kind)).collect();
        // Among the facts a reference names: one still expected and untaken, else untaken, else the first (a
        // second line for it is then a duplicate). The stages of one dispute share a reference.
        let pick = |found: Vec<usize>, taken: &[Option<usize>]| {
            found
                .iter()
                .copied()
                .find(|&i| taken[i].is_none() && !is_reversed(facts[i]))
                .or_else(|| found.iter().copied().find(|&i| taken[i].is_none()))
                .or(found.first().copied())
        };
        let mut chosen = pick(of_kind.iter().copied().filter(|&i| named(modification, facts[i])).collect(), &taken);
        if chosen.is_none() {
            // The modification names a fact of another kind: the PSP and the ledger disagree on what it was.
            if let Some(i) = candidates.iter().copied().find(|&i| named(modification, facts[i])) {
                let detail = format!("a {} line naming a {} fact", s.category, facts[i].kind.as_str());
                out.breaks.push(brk(l, &payment, BreakKind::CategoryMismatch, detail, Some(facts[i])));
                continue;
            }
            // The payment's own reference (Adyen's immediate capture, Stripe's charge).
            chosen = pick(
                of_kind.iter().copied().filter(|&i| named(s.payment_reference.as_deref(), facts[i])).collect(),
                &taken,
            );
        }
        match chosen {
            Some(i) if taken[i].is_some() => {
                let detail = format!("a second {} line for a fact already settled", s.category);
                out.breaks.push(brk(l, &payment, BreakKind::DuplicateLine, detail, Some(facts[i])));
            }
            Some(i) => {
                taken[i] = Some(li);
                matched.push((li, i, payment));
            }
            None => pending.push((li, payment)),
        }
    }
    // 2. The fallback, after every exact match: the payment's one fact of the kind that no line named.
    for (li, payment) in pending {
        let l = lines[li];
        let kinds = settles(&l.line.kind);
        let of_kind: Vec<usize> = payment
            .as_deref()
            .and_then(|p| by_payment.get(p))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter(|&i| kinds.contains(&facts[i].kind))
            .collect();
        match of_kind.as_slice() {
            [only] if taken[*only].is_none() => {
                taken[*only] = Some(li);
                out.fallbacks += 1;
                matched.push((li, *only, payment));
            }
            _ => {
                let detail =
                    format!("a {} line for which the ledger has no {} fact", l.line.category, kinds[0].as_str());
                out.breaks.push(brk(l, &payment, BreakKind::MissingInLedger, detail, None));
            }
        }
    }
    // 3. What each matched pair says.
    matched.sort_by_key(|(li, ..)| *li);
    for (li, i, payment) in matched {
        let (l, fact) = (lines[li], facts[i]);
        let s = &l.line;
        let mut gross = s.gross.unwrap_or(s.net);
        if s.kind == LineKind::Settled && s.psp == Psp::Stripe {
            if let Some(r) = payment.as_ref().and_then(|p| released.remove(p)) {
                gross.amount = Amount::from_minor(gross.amount.minor().saturating_add(r));
            }
        }
        let say = |kind, detail: String| brk(l, &payment, kind, detail, Some(fact));
        if gross.currency != fact.money.currency {
            let detail = format!("line in {}, fact in {}", gross.currency.code(), fact.money.currency.code());
            out.breaks.push(say(BreakKind::CurrencyMismatch, detail));
            continue;
        }
        let expected = fact.money.amount.minor().saturating_mul(sign(&s.kind));
        let mut tolerated = false;
        let amount_diff = gross.amount.minor().saturating_sub(expected);
        if amount_diff != 0 && rules.tolerances.allows(fact.psp, BreakKind::AmountMismatch, amount_diff) {
            tolerated = true;
        } else if amount_diff != 0 {
            let detail = format!("line {} against fact {expected} {}", gross.amount.minor(), gross.currency.code());
            out.breaks.push(say(BreakKind::AmountMismatch, detail));
            continue;
        }
        // The fee is in the net currency: checked against the plan only where gross and net share it.
        if s.kind == LineKind::Settled && s.net.currency == gross.currency {
            let plan = (rules.price)(&fact.merchant_id, fact.psp, fact.occurred_at);
            if let Some(fee) = plan.and_then(|p| p.fee(gross.amount, wire_unit(fact.psp, gross.currency))) {
                let fee_diff = s.fee.minor().saturating_sub(fee.minor());
                if fee_diff != 0 && rules.tolerances.allows(fact.psp, BreakKind::FeeMismatch, fee_diff) {
                    tolerated = true;
                } else if fee_diff != 0 {
                    let detail =
                        format!("fee {} where {}'s plan makes it {}", s.fee.minor(), fact.merchant_id, fee.minor());
                    out.breaks.push(say(BreakKind::FeeMismatch, detail));
                    continue;
                }
            }
        }
        let due = add_business_days(fact.occurred_at, (rules.sla_days)(fact.psp));
        let settled = s.settled_at.unwrap_or(s.booked_at);
        if EXPECTED.contains(&fact.kind) && settled > due {
            out.breaks.push(say(BreakKind::MissingAtPsp, format!("settled late: due {due}, settled {settled}")));
            continue;
        }
        let currency = s.gross.map_or(s.net.currency, |g| g.currency);
        let t = out.totals.entry((s.psp.as_str().to_owned(), currency.code().to_owned())).or_default();
        t.matched += 1;
        t.within_tolerance += u64::from(tolerated);
    }

    // Expectations: facts due by their SLA before the reports' coverage of their PSP, with no line.
    let coverage = rules.scope.map_or(&as_of, |s| &s.coverage);
    for (i, f) in facts.iter().enumerate() {
        // Only PSPs whose reports are in: the coverage has a time for each PSP with a line (in a scoped run, with a
        // line anywhere: the scope's lines may hold none of the PSP's).
        if !coverage.contains_key(&f.psp) || !EXPECTED.contains(&f.kind) {
            continue;
        }
        if rules.scope.is_some_and(|s| !s.judged.contains(&f.fact_key)) {
            continue;
        }
        if f.kind == EventKind::Captured {
            let t = out.totals.entry((f.psp.as_str().to_owned(), f.money.currency.code().to_owned())).or_default();
            t.booked_minor = t.booked_minor.saturating_add(f.money.amount.minor());
        }
        let due = add_business_days(f.occurred_at, (rules.sla_days)(f.psp));
        if taken[i].is_none() && !is_reversed(f) {
            out.open.push((f.fact_key.clone(), f.psp, due));
        }
        if taken[i].is_none() && !is_reversed(f) && coverage.get(&f.psp).is_some_and(|&newest| due < newest) {
            out.breaks.push(Break {
                kind: BreakKind::MissingAtPsp,
                psp: f.psp,
                payment_id: Some(f.payment_id.clone()),
                line: None,
                fact_key: Some(f.fact_key.clone()),
                fact: Some(f.lineage.clone()),
                amount: Some(f.money),
                detail: format!("{} due by {due}, not in any report", f.kind.as_str()),
            });
        }
    }

    match rules.scope {
        Some(scope) => out.breaks.extend(scope.batches.iter().cloned()),
        None => out.breaks.extend(missing_batches(lines.iter().copied())),
    }
    out.recount();
    out
}

/// Adyen batches: per merchant account, every number between the first and the last must be there.
pub fn missing_batches<'a>(lines: impl IntoIterator<Item = &'a Line>) -> Vec<Break> {
    let mut batches: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for l in lines.into_iter().filter(|l| l.line.psp == Psp::Adyen) {
        if let Some(n) = l.line.batch.as_deref().and_then(|b| b.parse::<u64>().ok()) {
            batches.entry(l.line.account.as_str()).or_default().insert(n);
        }
    }
    let mut out = Vec::new();
    for (account, numbers) in batches {
        let (Some(&lo), Some(&hi)) = (numbers.first(), numbers.last()) else { continue };
        for n in (lo..hi).filter(|n| !numbers.contains(n)) {
            out.push(Break {
                kind: BreakKind::MissingBatch,
                psp: Psp::Adyen,
                payment_id: None,
                line: None,
                fact_key: None,
                fact: None,
                amount: None,
                // No `hi` in the text: the id of a break is stable when later batches arrive.
                detail: format!("{account}: batch {n} missing"),
            });
        }
    }
    out
}

/// The nightly run's inputs for the UTC day starting at `start`: every line booked or settled that day and every
/// line of a payment with a fact that day; every fact of the payments those lines and facts concern (so that a line
/// finds its fact whatever day it happened); judged — expected to settle — are only the day's facts, against the
/// coverage of all the lines given. Batch gaps are judged on every line given ([`missing_batches`]).
/// The newest settlement time of the lines, per PSP: how far the reports reach.
pub fn coverage<'a>(lines: impl IntoIterator<Item = &'a Line>) -> BTreeMap<Psp, Timestamp> {
    let mut coverage: BTreeMap<Psp, Timestamp> = BTreeMap::new();
    for l in lines {
        let when = l.line.settled_at.unwrap_or(l.line.booked_at);
        let e = coverage.entry(l.line.psp).or_insert(when);
        *e = (*e).max(when);
    }
    coverage
}

pub fn scope_to_day(lines: &[Line], facts: &[Fact], start: Timestamp) -> (Vec<Line>, Vec<Fact>, Scope) {
    let lo = start.unix_micros();
    let in_day = |t: Timestamp| (lo..lo + 86_400_000_000).contains(&t.unix_micros());
    let coverage = coverage(lines);
    let judged: BTreeSet<String> = facts.iter().filter(|f| in_day(f.occurred_at)).map(|f| f.fact_key.clone()).collect();
    let of_day: BTreeSet<&str> =
        facts.iter().filter(|f| judged.contains(&f.fact_key)).map(|f| f.payment_id.as_str()).collect();
    let payment = |l: &Line| l.line.payment_reference.as_ref().map(|r| format!("{}:{r}", l.line.psp.as_str()));
    let by_reference: BTreeMap<(Psp, &str), &str> =
        facts.iter().map(|f| ((f.psp, f.psp_reference.as_str()), f.payment_id.as_str())).collect();
    let day_lines: Vec<Line> = lines
        .iter()
        .filter(|l| {
            in_day(l.line.booked_at)
                || l.line.settled_at.is_some_and(in_day)
                || payment(l).is_some_and(|p| of_day.contains(p.as_str()))
        })
        .cloned()
        .collect();
    let mut payments: BTreeSet<String> = of_day.iter().map(|p| (*p).to_owned()).collect();
    for l in &day_lines {
        let named = l.line.modification_reference.as_deref().and_then(|r| by_reference.get(&(l.line.psp, r)));
        payments.extend(payment(l).or_else(|| named.map(|p| (*p).to_owned())));
    }
    let day_facts = facts.iter().filter(|f| payments.contains(&f.payment_id)).cloned().collect();
    (day_lines, day_facts, Scope { judged, coverage, batches: missing_batches(lines) })
}
