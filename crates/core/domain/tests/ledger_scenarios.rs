//! Posting rules as a scenario table: given events → expected entries (DESIGN §4).

mod common;

use common::event;
use tally_domain::ledger::{balances, postings, PostingError};
use tally_domain::EventKind::{self, *};
use tally_money::Amount;

/// (kind, amount, fee, expected entries as (account, signed minor units); debit positive, credit negative)
type Scenario = (EventKind, i64, Option<i64>, &'static [(&'static str, i64)]);

const SCENARIOS: &[Scenario] = &[
    (Authorized, 1000, None, &[]),
    (AuthorizationFailed, 1000, None, &[]),
    (CaptureFailed, 1000, None, &[]),
    (Captured, 1000, None, &[("psp_receivable:stripe", 1000), ("merchant_payable:m1", -1000)]),
    (Settled, 1000, Some(30), &[("cash:stripe", 970), ("psp_fees", 30), ("psp_receivable:stripe", -1000)]),
    (Settled, 1000, None, &[("cash:stripe", 1000), ("psp_receivable:stripe", -1000)]),
    // The fee took it all: no zero leg (the ledger refuses zero entries).
    (Settled, 1000, Some(1000), &[("psp_fees", 1000), ("psp_receivable:stripe", -1000)]),
    (Refunded, 400, None, &[("merchant_payable:m1", 400), ("psp_receivable:stripe", -400)]),
    (RefundFailed, 400, None, &[("psp_receivable:stripe", 400), ("merchant_payable:m1", -400)]),
    (ChargebackOpened, 1000, None, &[("dispute_reserve:m1", 1000), ("psp_receivable:stripe", -1000)]),
    (ChargebackWon, 1000, None, &[("psp_receivable:stripe", 1000), ("dispute_reserve:m1", -1000)]),
    (ChargebackLost, 1000, None, &[("chargeback_losses", 1000), ("dispute_reserve:m1", -1000)]),
    (Payout, 5000, None, &[("merchant_payable:m1", 5000), ("cash:stripe", -5000)]),
    (Fee, 1500, None, &[("psp_fees", 1500), ("psp_receivable:stripe", -1500)]),
    (Canceled, 1000, None, &[]),
    // A capture the scheme took back (Adyen CAPTURE_FAILED): the capture's journal, mirrored.
    (CaptureReversed, 1000, None, &[("merchant_payable:m1", 1000), ("psp_receivable:stripe", -1000)]),
    // The dispute's later stages move funds per transition, like the first stage.
    (SecondChargeback, 1000, None, &[("dispute_reserve:m1", 1000), ("psp_receivable:stripe", -1000)]),
    (PrearbitrationWon, 1000, None, &[("psp_receivable:stripe", 1000), ("dispute_reserve:m1", -1000)]),
    (PrearbitrationLost, 1000, None, &[("chargeback_losses", 1000), ("dispute_reserve:m1", -1000)]),
    // Settlement report lines (ADR 0015 §4): the PSP balance moves by the net, the receivable by the gross.
    (SettledCredit, 1000, Some(30), &[("cash:stripe", 970), ("psp_fees", 30), ("psp_receivable:stripe", -1000)]),
    (SettledCredit, 1000, None, &[("cash:stripe", 1000), ("psp_receivable:stripe", -1000)]),
    // A fixed fee above a small gross: the balance loses the difference.
    (SettledCredit, 13, Some(30), &[("cash:stripe", -17), ("psp_fees", 30), ("psp_receivable:stripe", -13)]),
    // A refund line, with a fee on top; a refund line without one; a fee line (gross 0).
    (SettledDebit, 400, Some(15), &[("psp_receivable:stripe", 400), ("psp_fees", 15), ("cash:stripe", -415)]),
    (SettledDebit, 400, None, &[("psp_receivable:stripe", 400), ("cash:stripe", -400)]),
    (SettledDebit, 0, Some(250), &[("psp_fees", 250), ("cash:stripe", -250)]),
    (SettledPayout, 9000, None, &[("cash:bank", 9000), ("cash:stripe", -9000)]),
    // A line settled across currencies moves the receivable between them through the conversion account.
    (ConversionOut, 10_000, None, &[("fx_conversion:stripe", 10_000), ("psp_receivable:stripe", -10_000)]),
    (ConversionIn, 9_000, None, &[("psp_receivable:stripe", 9_000), ("fx_conversion:stripe", -9_000)]),
];

#[test]
fn every_kind_posts_the_expected_balanced_entries() {
    let mut covered = std::collections::BTreeSet::new();
    for (kind, minor, fee, expected) in SCENARIOS {
        let mut e = event(*kind, "ch_1", "ch_1", "m1", *minor, "EUR");
        e.fee = fee.map(Amount::from_minor);
        let journal = postings(&e).unwrap();
        let got: Vec<(String, i64)> = journal
            .iter()
            .flat_map(|j| &j.entries)
            .map(|entry| (entry.account.to_string(), entry.money.amount.minor()))
            .collect();
        let want: Vec<(String, i64)> = expected.iter().map(|(a, m)| (a.to_string(), *m)).collect();
        assert_eq!(got, want, "{kind}");
        if let Some(j) = journal {
            assert!(j.is_balanced(), "{kind} journal does not balance");
            assert!(j.entries.iter().all(|x| !x.money.amount.is_zero()), "{kind}: zero leg");
            assert_eq!(j.fact_key, e.fact_key());
            assert!(j.entries.iter().all(|x| x.money.currency.code() == "EUR"));
        }
        covered.insert(*kind);
    }
    assert_eq!(covered.len(), EventKind::ALL.len(), "a kind has no scenario");
}

#[test]
fn nonsensical_amounts_are_refused_not_posted() {
    let zero = event(Captured, "ch_1", "ch_1", "m1", 0, "EUR");
    assert!(matches!(postings(&zero), Err(PostingError::NonPositiveAmount { .. })));
    let negative = event(Refunded, "ch_1", "re_1", "m1", -5, "EUR");
    assert!(matches!(postings(&negative), Err(PostingError::NonPositiveAmount { .. })));
    // A settlement debit of nothing (no gross, no fee), or with a negative fee, is refused.
    let empty = event(SettledDebit, "ch_1", "ln_1", "m1", 0, "EUR");
    assert!(matches!(postings(&empty), Err(PostingError::NonPositiveAmount { .. })));
    let mut rebate = event(SettledDebit, "ch_1", "ln_1", "m1", 0, "EUR");
    rebate.fee = Some(Amount::from_minor(-5));
    assert!(matches!(postings(&rebate), Err(PostingError::NonPositiveAmount { .. })));
    rebate.money.amount = Amount::from_minor(10);
    assert!(matches!(postings(&rebate), Err(PostingError::FeeOutOfRange { .. })));
    let zero_payout = event(SettledPayout, "po_1", "po_1", "m1", 0, "EUR");
    assert!(matches!(postings(&zero_payout), Err(PostingError::NonPositiveAmount { .. })));
    let mut fee_too_big = event(Settled, "ch_1", "ch_1", "m1", 100, "EUR");
    fee_too_big.fee = Some(Amount::from_minor(101));
    assert!(matches!(postings(&fee_too_big), Err(PostingError::FeeOutOfRange { .. })));
    // Authorizations move no money, so a zero-amount authorization (card verification) is fine.
    assert_eq!(postings(&event(Authorized, "ch_1", "ch_1", "m1", 0, "EUR")).unwrap(), None);
}

#[test]
fn a_full_lifecycle_for_two_merchants_and_currencies_nets_to_the_expected_balances() {
    let events = vec![
        event(Authorized, "ch_1", "ch_1", "m1", 10_000, "EUR"),
        event(Captured, "ch_1", "ch_1", "m1", 10_000, "EUR"),
        event(Refunded, "ch_1", "re_1", "m1", 2_500, "EUR"),
        event(Captured, "ch_2", "ch_2", "m2", 5_000, "JPY"),
        event(ChargebackOpened, "ch_2", "ch_2", "m2", 5_000, "JPY"),
        event(ChargebackLost, "ch_2", "ch_2", "m2", 5_000, "JPY"),
        // A retried delivery of the refund: applied once.
        event(Refunded, "ch_1", "re_1", "m1", 2_500, "EUR"),
    ];
    let b = balances(&events).unwrap();
    let get = |account: &str, code: &str| {
        b.iter().find(|((a, c), _)| a.to_string() == account && c.code() == code).map(|(_, v)| v.minor()).unwrap_or(0)
    };
    assert_eq!(get("psp_receivable:stripe", "EUR"), 7_500);
    assert_eq!(get("merchant_payable:m1", "EUR"), -7_500);
    assert_eq!(get("psp_receivable:stripe", "JPY"), 0);
    assert_eq!(get("merchant_payable:m2", "JPY"), -5_000);
    assert_eq!(get("dispute_reserve:m2", "JPY"), 0);
    assert_eq!(get("chargeback_losses", "JPY"), 5_000);
    // The trial balance is zero per currency.
    for code in ["EUR", "JPY"] {
        let total: i64 = b.iter().filter(|((_, c), _)| c.code() == code).map(|(_, v)| v.minor()).sum();
        assert_eq!(total, 0, "{code}");
    }
}

#[test]
fn accounts_parse_as_the_chart_scopes_them_and_round_trip() {
    use tally_domain::ledger::Account;
    for text in [
        "psp_receivable:stripe",
        "psp_receivable:adyen",
        "cash:adyen",
        "cash:bank",
        "merchant_payable:m_42",
        "dispute_reserve:m1",
        "psp_fees",
        "chargeback_losses",
        "fee_revenue",
    ] {
        let account: Account = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(account.to_string(), text);
    }
    for (text, why) in [
        ("psp_receivable", "per PSP"),
        ("psp_receivable:paypal", "per PSP"),
        ("cash:m1", "the bank"),
        ("merchant_payable", "per merchant"),
        ("merchant_payable:m 1", "per merchant"),
        ("merchant_payable:a:b", "per merchant"),
        ("psp_fees:stripe", "no scope"),
        ("suspense", "no such account"),
        ("", "no such account"),
    ] {
        let err = text.parse::<Account>().unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn a_correction_balances_per_currency_has_no_zero_leg_and_hashes_its_cause_and_entries_in_order() {
    use tally_domain::ledger::{Correction, CorrectionError, Entry};
    use tally_money::{Currency, Money};
    let entry = |account: &str, minor: i64, currency: &str| Entry {
        account: account.parse().unwrap(),
        money: Money::new(Amount::from_minor(minor), Currency::from_code(currency).unwrap()),
    };
    let ok = Correction::new(
        "recon_break:b1",
        vec![entry("psp_receivable:stripe", 900, "EUR"), entry("merchant_payable:m1", -900, "EUR")],
    )
    .unwrap();
    assert_eq!(
        ok.canonical(),
        "tally-correction-v1\nrecon_break:b1\npsp_receivable:stripe\tEUR\t900\nmerchant_payable:m1\tEUR\t-900\n"
    );
    // Two currencies, each balanced (an FX conversion through two legs per currency).
    Correction::new(
        "c",
        vec![
            entry("cash:adyen", 1000, "EUR"),
            entry("psp_receivable:adyen", -1000, "EUR"),
            entry("psp_receivable:adyen", 1100, "USD"),
            entry("cash:adyen", -1100, "USD"),
        ],
    )
    .unwrap();
    let refused = |cause: &str, entries: Vec<Entry>| Correction::new(cause, entries).unwrap_err();
    assert_eq!(refused("c", vec![entry("psp_fees", 1, "EUR")]), CorrectionError::TooFewEntries(1));
    assert_eq!(
        refused("c", vec![entry("psp_fees", 0, "EUR"), entry("cash:bank", 0, "EUR")]),
        CorrectionError::ZeroEntry { index: 0 }
    );
    let unbalanced = refused("c", vec![entry("psp_fees", 500, "EUR"), entry("cash:stripe", -500, "USD")]);
    assert!(
        matches!(unbalanced, CorrectionError::Unbalanced { total, .. } if total.minor().abs() == 500),
        "{unbalanced}"
    );
    assert_eq!(
        refused("", vec![entry("psp_fees", 5, "EUR"), entry("cash:bank", -5, "EUR")]),
        CorrectionError::BadCause
    );
    // An account's balance it cannot represent is refused, whichever order the entries come in.
    let max = i64::MAX;
    let overflow = refused(
        "c",
        vec![
            entry("psp_fees", max, "EUR"),
            entry("cash:bank", -max, "EUR"),
            entry("psp_fees", max, "EUR"),
            entry("cash:bank", -max, "EUR"),
        ],
    );
    assert!(matches!(overflow, CorrectionError::Money(_)), "{overflow}");
}
