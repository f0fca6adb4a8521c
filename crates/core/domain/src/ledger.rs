//! Ledger posting rules (DESIGN §4): a journal is a pure function of one event, so arrival order cannot change
//! balances (I4). Entries are signed: a debit is positive, a credit negative; a journal balances when its entries sum
//! to zero in every currency (I3).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use tally_money::{Amount, Currency, Money, MoneyError};

use crate::{distinct_facts, EventKind, FactKey, PaymentEvent};

/// The chart of accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Asset: money the PSP holds for us, per PSP.
    PspReceivable,
    /// Asset: money at a PSP that it has settled (its balance, `cash:{psp}`), and our bank account that PSPs pay
    /// out to (`cash:bank`).
    Cash,
    /// Liability: what we owe the merchant, per merchant.
    MerchantPayable,
    /// Asset: disputed funds the PSP withdrew and may reinstate, per merchant.
    DisputeReserve,
    /// Expense: fees the PSP charged us.
    PspFees,
    /// Expense: chargebacks lost.
    ChargebackLosses,
    /// Revenue: fees we charge merchants (booked by the pricing engine, not by PSP events).
    FeeRevenue,
    /// Currency trading account, per PSP: where a settlement across currencies converts the receivable. It holds
    /// one position per currency; their value together is the gain or loss on the conversion.
    FxConversion,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::PspReceivable => "psp_receivable",
            AccountKind::Cash => "cash",
            AccountKind::MerchantPayable => "merchant_payable",
            AccountKind::DisputeReserve => "dispute_reserve",
            AccountKind::PspFees => "psp_fees",
            AccountKind::ChargebackLosses => "chargeback_losses",
            AccountKind::FeeRevenue => "fee_revenue",
            AccountKind::FxConversion => "fx_conversion",
        }
    }
}

/// An account: a kind, scoped to a PSP or a merchant where the chart says so. Renders as `kind[:scope]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Account {
    pub kind: AccountKind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
}

impl Account {
    fn scoped(kind: AccountKind, scope: &str) -> Self {
        Account { kind, scope: Some(scope.to_owned()) }
    }

    fn global(kind: AccountKind) -> Self {
        Account { kind, scope: None }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Some(scope) => write!(f, "{}:{scope}", self.kind.as_str()),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl std::str::FromStr for Account {
    type Err = String;

    /// Parses `kind[:scope]` as the chart allows it: `psp_receivable:{psp}`, `cash:{psp}` or `cash:bank`,
    /// `merchant_payable:{merchant}`, `dispute_reserve:{merchant}`, and the unscoped `psp_fees`,
    /// `chargeback_losses`, `fee_revenue`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use AccountKind::*;
        let (kind, scope) = match s.split_once(':') {
            Some((k, sc)) => (k, Some(sc)),
            None => (s, None),
        };
        let kind = [PspReceivable, Cash, MerchantPayable, DisputeReserve, PspFees, ChargebackLosses, FeeRevenue, FxConversion]
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| format!("`{s}`: no such account in the chart (psp_receivable, cash, merchant_payable, dispute_reserve, psp_fees, chargeback_losses, fee_revenue, fx_conversion)"))?;
        let is_psp = |sc: &str| sc.parse::<crate::Psp>().is_ok();
        match (kind, scope) {
            (PspReceivable | FxConversion, Some(sc)) if is_psp(sc) => Ok(Account::scoped(kind, sc)),
            (Cash, Some(sc)) if is_psp(sc) || sc == "bank" => Ok(Account::scoped(kind, sc)),
            (MerchantPayable | DisputeReserve, Some(sc))
                if !sc.is_empty() && !sc.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':') =>
            {
                Ok(Account::scoped(kind, sc))
            }
            (PspFees | ChargebackLosses | FeeRevenue, None) => Ok(Account::global(kind)),
            (PspReceivable | FxConversion, _) => {
                Err(format!("`{s}`: {} is per PSP ({}:stripe|adyen)", kind.as_str(), kind.as_str()))
            }
            (Cash, _) => Err(format!("`{s}`: cash is a PSP's balance (cash:stripe|adyen) or the bank (cash:bank)")),
            (MerchantPayable | DisputeReserve, _) => {
                Err(format!("`{s}`: {} is per merchant ({}:MERCHANT_ID)", kind.as_str(), kind.as_str()))
            }
            (PspFees | ChargebackLosses | FeeRevenue, Some(_)) => Err(format!("`{s}`: {} has no scope", kind.as_str())),
        }
    }
}

/// One leg of a journal: positive = debit, negative = credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub account: Account,
    pub money: Money,
}

/// The entries one fact posts, tied to its fact key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub fact_key: FactKey,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("{kind} amount must be positive, got {amount}")]
    NonPositiveAmount { kind: EventKind, amount: Amount },
    #[error("settlement fee {fee} must be between 0 and the gross amount {gross} (a report line: at least 0)")]
    FeeOutOfRange { fee: Amount, gross: Amount },
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("{field} contains a NUL character, which the ledger's database cannot store")]
    NulInText { field: &'static str },
}

/// Everything the ledger checks before it books a fact, as one rule that the webhook edge runs too (before its
/// 2xx), so that the edge and the sink can never disagree about what is bookable: the posting rules accept it, and
/// no text the ledger stores holds a NUL (PostgreSQL text cannot).
pub fn check_bookable(event: &PaymentEvent) -> Result<(), PostingError> {
    postings(event)?;
    let a = &event.attributes;
    let texts: [(&'static str, Option<&str>); 12] = [
        ("payment_id", Some(&event.payment_id)),
        ("psp_reference", Some(&event.psp_reference)),
        ("original_reference", event.original_reference.as_deref()),
        ("merchant_id", Some(&event.merchant_id)),
        ("source_event_id", Some(&event.source_event_id)),
        ("attributes.card_token", a.card_token.as_deref()),
        ("attributes.card_brand", a.card_brand.as_deref()),
        ("attributes.card_country", a.card_country.as_deref()),
        ("attributes.customer_token", a.customer_token.as_deref()),
        ("attributes.device_id", a.device_id.as_deref()),
        ("attributes.payment_method", a.payment_method.as_deref()),
        ("attributes.reason", a.reason.as_deref()),
    ];
    match texts.into_iter().find(|(_, t)| t.is_some_and(|t| t.contains('\0'))) {
        Some((field, _)) => Err(PostingError::NulInText { field }),
        None => Ok(()),
    }
}

impl Journal {
    /// Sum of entries per currency; every value is zero for a balanced journal.
    pub fn totals(&self) -> Result<BTreeMap<Currency, Amount>, MoneyError> {
        let mut totals = BTreeMap::new();
        for e in &self.entries {
            let t = totals.entry(e.money.currency).or_insert(Amount::ZERO);
            *t = t.checked_add(e.money.amount)?;
        }
        Ok(totals)
    }

    pub fn is_balanced(&self) -> bool {
        self.totals().is_ok_and(|t| t.values().all(|a| a.is_zero()))
    }
}

/// A correction journal (I3: corrections are new journals, never changes): entries an operator proposed and a
/// second operator approved, booked for a cause (`recon_break:{id}`, later `replay:{plan}`) rather than from a fact.
/// Its canonical text binds the cause and every entry in order; the approval names that text's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    cause: String,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionError {
    #[error("a correction needs at least two entries (a debit and a credit), got {0}")]
    TooFewEntries(usize),
    #[error("entry {index}: an amount of zero is no leg")]
    ZeroEntry { index: usize },
    #[error(
        "the entries do not balance in {currency}: they sum to {total} minor units (debits positive, credits negative)"
    )]
    Unbalanced { currency: Currency, total: Amount },
    #[error("the cause must be non-empty text without control characters")]
    BadCause,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Correction {
    pub fn new(cause: impl Into<String>, entries: Vec<Entry>) -> Result<Self, CorrectionError> {
        let cause = cause.into();
        if cause.trim().is_empty() || cause.contains(|c: char| c.is_control()) {
            return Err(CorrectionError::BadCause);
        }
        if entries.len() < 2 {
            return Err(CorrectionError::TooFewEntries(entries.len()));
        }
        if let Some(index) = entries.iter().position(|e| e.money.amount.is_zero()) {
            return Err(CorrectionError::ZeroEntry { index });
        }
        // Per account too, with checked arithmetic, so that the balances it moves are representable.
        let mut per_account: BTreeMap<(&Account, Currency), Amount> = BTreeMap::new();
        for e in &entries {
            let sum = per_account.entry((&e.account, e.money.currency)).or_insert(Amount::ZERO);
            *sum = sum.checked_add(e.money.amount)?;
        }
        let journal = Journal { fact_key: FactKey(uuid::Uuid::nil()), entries };
        if let Some((currency, total)) = journal.totals()?.into_iter().find(|(_, t)| !t.is_zero()) {
            return Err(CorrectionError::Unbalanced { currency, total });
        }
        Ok(Correction { cause, entries: journal.entries })
    }

    pub fn cause(&self) -> &str {
        &self.cause
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes an approval hashes: a version line, the cause, then one `account\tcurrency\tminor` line per
    /// entry in order. The ledger's database recomputes the same text from the booked entries at commit.
    pub fn canonical(&self) -> String {
        let mut out = format!("tally-correction-v1\n{}\n", self.cause);
        for e in &self.entries {
            out.push_str(&format!("{}\t{}\t{}\n", e.account, e.money.currency.code(), e.money.amount.minor()));
        }
        out
    }
}

/// Whether a fact of this kind posts a journal. Authorizations, their failures and releases, and the v1
/// `capture_failed` (a refused capture request) move no money.
pub fn moves_money(kind: EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Authorized | EventKind::AuthorizationFailed | EventKind::CaptureFailed | EventKind::Canceled
    )
}

/// The journal an event posts, or `None` for facts that move no money (authorizations, failures).
pub fn postings(event: &PaymentEvent) -> Result<Option<Journal>, PostingError> {
    use AccountKind::*;
    let gross = event.money.amount;
    let currency = event.money.currency;
    let kind = event.kind;
    let psp = event.psp.as_str();
    let merchant = event.merchant_id.as_str();

    if !moves_money(kind) {
        return Ok(None);
    }
    // A fee line of a settlement report debits the balance by its fee alone: its gross is zero.
    let zero_gross_allowed = kind == EventKind::SettledDebit && event.fee.is_some_and(|f| f.minor() > 0);
    if gross.minor() < 0 || (gross.is_zero() && !zero_gross_allowed) {
        return Err(PostingError::NonPositiveAmount { kind, amount: gross });
    }
    let debit = |account: Account, amount: Amount| Entry { account, money: Money::new(amount, currency) };
    let credit = |account: Account, amount: Amount| -> Result<Entry, MoneyError> {
        Ok(Entry { account, money: Money::new(amount.checked_neg()?, currency) })
    };
    let receivable = || Account::scoped(PspReceivable, psp);
    let payable = || Account::scoped(MerchantPayable, merchant);
    let reserve = || Account::scoped(DisputeReserve, merchant);
    // (debit account, credit account) for the two-legged postings.
    let two_legged =
        |dr: Account, cr: Account| -> Result<Vec<Entry>, MoneyError> { Ok(vec![debit(dr, gross), credit(cr, gross)?]) };

    let entries = match kind {
        EventKind::Captured => two_legged(receivable(), payable())?,
        EventKind::Settled | EventKind::SettledCredit => {
            let fee = event.fee.unwrap_or(Amount::ZERO);
            // A report line may carry a fixed fee above a small gross (Stripe's 30 cents on a 13-cent charge): the
            // balance then loses the difference, and the cash leg is a credit.
            if fee.is_negative() || (fee > gross && kind == EventKind::Settled) {
                return Err(PostingError::FeeOutOfRange { fee, gross });
            }
            // A leg of zero is no leg: a settlement whose fee ate the whole gross moves nothing to cash.
            let net = gross.checked_sub(fee)?;
            let mut entries = Vec::with_capacity(3);
            if !net.is_zero() {
                entries.push(debit(Account::scoped(Cash, psp), net));
            }
            if !fee.is_zero() {
                entries.push(debit(Account::global(PspFees), fee));
            }
            entries.push(credit(receivable(), gross)?);
            entries
        }
        // The balance paid what the receivable owed us back out (a refund, a reversal, a chargeback) plus a fee.
        EventKind::SettledDebit => {
            let fee = event.fee.unwrap_or(Amount::ZERO);
            if fee.is_negative() {
                return Err(PostingError::FeeOutOfRange { fee, gross });
            }
            let mut entries = Vec::with_capacity(3);
            if !gross.is_zero() {
                entries.push(debit(receivable(), gross));
            }
            if !fee.is_zero() {
                entries.push(debit(Account::global(PspFees), fee));
            }
            entries.push(credit(Account::scoped(Cash, psp), gross.checked_add(fee)?)?);
            entries
        }
        EventKind::SettledPayout => two_legged(Account::scoped(Cash, "bank"), Account::scoped(Cash, psp))?,
        EventKind::ConversionOut => two_legged(Account::scoped(FxConversion, psp), receivable())?,
        EventKind::ConversionIn => two_legged(receivable(), Account::scoped(FxConversion, psp))?,
        EventKind::CaptureReversed => two_legged(payable(), receivable())?,
        EventKind::Refunded => two_legged(payable(), receivable())?,
        EventKind::RefundFailed => two_legged(receivable(), payable())?,
        // Each dispute stage moves the funds of its own transition: withdrawn (opened, second chargeback),
        // returned (won, pre-arbitration won) or written off (lost, pre-arbitration lost).
        EventKind::ChargebackOpened | EventKind::SecondChargeback => two_legged(reserve(), receivable())?,
        EventKind::ChargebackWon | EventKind::PrearbitrationWon => two_legged(receivable(), reserve())?,
        EventKind::ChargebackLost | EventKind::PrearbitrationLost => {
            two_legged(Account::global(ChargebackLosses), reserve())?
        }
        // A connected account's payout pays the merchant out of its settled PSP balance (ADR 0015 §4).
        EventKind::Payout => two_legged(payable(), Account::scoped(Cash, psp))?,
        EventKind::Fee => two_legged(Account::global(PspFees), receivable())?,
        EventKind::Authorized | EventKind::AuthorizationFailed | EventKind::CaptureFailed | EventKind::Canceled => {
            unreachable!("handled above")
        }
    };
    Ok(Some(Journal { fact_key: event.fact_key(), entries }))
}

/// Balances per (account, currency) after posting every *distinct* fact in `events` once. Duplicates (same fact
/// key) are applied once, as the ledger's unique key does, with the representative of [`distinct_facts`].
pub fn balances<'a, I>(events: I) -> Result<BTreeMap<(Account, Currency), Amount>, PostingError>
where
    I: IntoIterator<Item = &'a PaymentEvent>,
{
    let mut balances = BTreeMap::new();
    for event in distinct_facts(events).into_values() {
        let Some(journal) = postings(event)? else { continue };
        for entry in journal.entries {
            let b = balances.entry((entry.account, entry.money.currency)).or_insert(Amount::ZERO);
            *b = b.checked_add(entry.money.amount)?;
        }
    }
    Ok(balances)
}

/// The kind of fact that must already be known for a payment before a fact of `kind` makes sense. A fact whose
/// predecessor is missing is still posted (postings depend on the event alone, I4) and recorded as an orphan
/// exception that resolves itself when the predecessor arrives (DESIGN §4).
pub fn predecessor(kind: EventKind) -> Option<EventKind> {
    match kind {
        EventKind::Captured | EventKind::CaptureFailed | EventKind::Canceled => Some(EventKind::Authorized),
        EventKind::Settled | EventKind::Refunded | EventKind::ChargebackOpened | EventKind::CaptureReversed => {
            Some(EventKind::Captured)
        }
        EventKind::RefundFailed => Some(EventKind::Refunded),
        EventKind::ChargebackWon | EventKind::ChargebackLost => Some(EventKind::ChargebackOpened),
        EventKind::SecondChargeback => Some(EventKind::ChargebackWon),
        EventKind::PrearbitrationWon | EventKind::PrearbitrationLost => Some(EventKind::SecondChargeback),
        EventKind::Authorized
        | EventKind::AuthorizationFailed
        | EventKind::Payout
        | EventKind::Fee
        | EventKind::SettledCredit
        | EventKind::SettledDebit
        | EventKind::SettledPayout
        | EventKind::ConversionOut
        | EventKind::ConversionIn => None,
    }
}

/// How a fact changes a merchant's operational totals (captured, net refunded, open disputes), in its amount's
/// sign: +1 adds the amount, -1 takes it off, 0 leaves the total alone.
pub fn view_effect(kind: EventKind) -> ViewEffect {
    use EventKind::*;
    let (captured, refunded, disputed) = match kind {
        Captured => (1, 0, 0),
        CaptureReversed => (-1, 0, 0),
        Refunded => (0, 1, 0),
        RefundFailed => (0, -1, 0),
        ChargebackOpened | SecondChargeback => (0, 0, 1),
        ChargebackWon | ChargebackLost | PrearbitrationWon | PrearbitrationLost => (0, 0, -1),
        Authorized | AuthorizationFailed | CaptureFailed | Canceled | Settled | Payout | Fee | SettledCredit
        | SettledDebit | SettledPayout | ConversionOut | ConversionIn => (0, 0, 0),
    };
    ViewEffect { captured, refunded, disputed }
}

/// See [`view_effect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEffect {
    pub captured: i8,
    pub refunded: i8,
    pub disputed: i8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predecessors_form_chains_that_end_in_an_authorization_or_nothing() {
        for kind in EventKind::ALL {
            let mut k = kind;
            let mut steps = 0;
            while let Some(p) = predecessor(k) {
                k = p;
                steps += 1;
                assert!(steps < 8, "{kind}: cycle");
            }
            assert!(
                matches!(
                    k,
                    EventKind::Authorized
                        | EventKind::AuthorizationFailed
                        | EventKind::Payout
                        | EventKind::Fee
                        | EventKind::SettledCredit
                        | EventKind::SettledDebit
                        | EventKind::SettledPayout
                        | EventKind::ConversionOut
                        | EventKind::ConversionIn
                ),
                "{kind}"
            );
        }
        assert_eq!(predecessor(EventKind::Refunded), Some(EventKind::Captured));
    }
}
