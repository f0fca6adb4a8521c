//! Settlement report parsers on the real formats: Adyen's documented sample rows and its 2026 header (shared
//! fixtures), Stripe's documented columns; reordered and extra-column variants; and every way a file is refused
//! (file, line and column named, nothing returned).

mod common;

use tally_domain::Timestamp;
use tally_money::{Currency, DecimalSeparator, Money};
use tally_psp::report::{LineKind, Refused};
use tally_psp::{adyen, stripe};

fn money(minor: i64, code: &str) -> Money {
    Money::new(tally_money::Amount::from_minor(minor), Currency::from_code(code).unwrap())
}

fn utc(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

/// The 2026 header's column names.
fn header_2026() -> Vec<String> {
    let text = String::from_utf8(common::read("reports/adyen_settlement_details_header_2026.csv")).unwrap();
    text.trim().split(',').map(str::to_owned).collect()
}

/// Adyen's two documented sample rows, under the first columns of the 2026 header (the docs' layout is its prefix).
fn adyen_docs_sample() -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8(common::read("reports/adyen_settlement_details_docs_sample.txt")).unwrap();
    let rows: Vec<String> =
        text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_owned).collect();
    assert_eq!(rows.len(), 2, "the fixture holds two sample rows");
    let width = rows[0].split(',').count();
    (header_2026()[..width].to_vec(), rows)
}

fn csv(header: &[String], rows: &[String]) -> Vec<u8> {
    let mut out = header.join(",");
    for r in rows {
        out.push('\n');
        out.push_str(r);
    }
    out.push('\n');
    out.into_bytes()
}

fn refused_at(err: &Refused, line: u64, column: Option<&str>) -> String {
    let found = err.errors.iter().find(|e| e.line == line && e.column.as_deref() == column);
    assert!(found.is_some(), "no error at line {line} column {column:?}: {err:#?}");
    found.unwrap().to_string()
}

#[test]
fn adyens_documented_sample_rows_parse_to_their_arithmetic() {
    let (header, rows) = adyen_docs_sample();
    let report = adyen::report::parse("sample.csv", &csv(&header, &rows), None).unwrap();
    assert_eq!(report.lines.len(), 2);
    assert!(report.unknown_columns.is_empty(), "{:?}", report.unknown_columns);
    let settled = &report.lines[0];
    assert_eq!((settled.line, settled.kind.clone(), settled.category.as_str()), (2, LineKind::Settled, "Settled"));
    assert_eq!(settled.account, "TestMerchant");
    assert_eq!(settled.payment_reference.as_deref(), Some("1813702551707653"));
    assert_eq!(settled.modification_reference.as_deref(), Some("1713702551795048"));
    assert_eq!(settled.merchant_reference.as_deref(), Some("3vpzf7"));
    // 5.00 gross credit, 4.88 net credit, fees 0.04 + 0.01 + 0.07 (the fixture's own check).
    assert_eq!((settled.gross, settled.fee.minor(), settled.net), (Some(money(500, "GBP")), 12, money(488, "GBP")));
    // 11:26:49 CET (UTC+1).
    assert_eq!(settled.booked_at, utc("2013-06-03T10:26:49Z"));
    assert_eq!(settled.batch, None);
    let chargeback = &report.lines[1];
    assert_eq!(chargeback.kind, LineKind::Chargeback);
    // 349.99 gross debit; net debit 357.49 = gross + commission 7.5.
    assert_eq!(
        (chargeback.gross, chargeback.fee.minor(), chargeback.net),
        (Some(money(-34_999, "EUR")), 750, money(-35_749, "EUR"))
    );
    assert_eq!(chargeback.booked_at, utc("2013-03-26T21:37:26Z"));
}

#[test]
fn adyen_columns_are_read_by_name_in_any_order_and_extra_ones_are_counted() {
    let (header, rows) = adyen_docs_sample();
    let plain = adyen::report::parse("a.csv", &csv(&header, &rows), Some(17)).unwrap();
    // Reverse the columns and add two Tally does not know.
    let mut h: Vec<String> = header.iter().rev().cloned().collect();
    h.insert(3, "Surprise Column".into());
    h.push("Another New One".into());
    let shuffled: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut f: Vec<&str> = r.split(',').rev().collect();
            f.insert(3, "x");
            f.push("y");
            f.join(",")
        })
        .collect();
    let other = adyen::report::parse("b.csv", &csv(&h, &shuffled), Some(17)).unwrap();
    assert_eq!(other.lines, plain.lines);
    assert_eq!(other.unknown_columns, ["Surprise Column", "Another New One"]);
    assert_eq!(plain.lines[0].batch.as_deref(), Some("17"), "the batch named by the file fills an empty column");
    assert_ne!(other.sha256, plain.sha256);
    assert_eq!(plain.sha256, adyen::report::parse("again.csv", &csv(&header, &rows), Some(17)).unwrap().sha256);
}

/// A row of the 2026 layout with the named fields set and every other field empty.
fn row_2026(fields: &[(&str, &str)]) -> String {
    let header = header_2026();
    let mut out: Vec<String> = vec![String::new(); header.len()];
    for (name, value) in fields {
        let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} not in the header"));
        out[i] = if value.contains(',') { format!("\"{value}\"") } else { (*value).to_owned() };
    }
    out.join(",")
}

fn common_fields<'a>(t: &'a str, when: &'a str, zone: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Company Account", "TallyCo"),
        ("Merchant Account", "TallyShopEU"),
        ("Creation Date", when),
        ("TimeZone", zone),
        ("Type", t),
        ("Batch Number", "1300"),
    ]
}

#[test]
fn the_2026_layout_carries_payouts_costs_and_idr_at_adyens_exponent() {
    let mut settled = common_fields("Settled", "2026-07-01 09:00:00", "CEST");
    settled.extend([
        ("Psp Reference", "8816000000000001"),
        ("Merchant Reference", "order-1"),
        ("Modification Reference", "8816000000000002"),
        ("Gross Currency", "IDR"),
        ("Gross Credit (GC)", "150000"),
        ("Net Currency", "IDR"),
        ("Net Credit (NC)", "147000"),
        ("Interchange (NC)", "2000"),
        ("Scheme Fees (NC)", "1000"),
    ]);
    let mut payout = common_fields("MerchantPayout", "2026-07-02 10:00:00", "CEST");
    payout.extend([
        ("Modification Reference", "TX123 batch 1300, TallyShopEU"),
        ("Net Currency", "EUR"),
        ("Net Debit (NC)", "1000.00"),
    ]);
    let mut cost = common_fields("PaymentCost", "2026-07-02 10:00:00", "CEST");
    cost.extend([("Psp Reference", "8816000000000001"), ("Net Currency", "EUR"), ("Net Credit (NC)", "0.15")]);
    let mut odd = common_fields("DepositCorrection", "2026-07-02 10:00:00", "CEST");
    odd.extend([("Net Currency", "EUR"), ("Net Credit (NC)", "1.00")]);
    let rows = [row_2026(&settled), row_2026(&payout), row_2026(&cost), row_2026(&odd)];
    let report = adyen::report::parse("batch_1300.csv", &csv(&header_2026(), &rows), Some(1300)).unwrap();
    assert!(report.unknown_columns.is_empty());
    let [s, p, c, o] = &report.lines[..] else { panic!("{:?}", report.lines) };
    // IDR: ISO has 2 decimals, so 150000 rupiah are 15,000,000 minor units.
    assert_eq!((s.gross, s.fee.minor(), s.net), (Some(money(15_000_000, "IDR")), 300_000, money(14_700_000, "IDR")));
    assert_eq!(s.booked_at, utc("2026-07-01T07:00:00Z"));
    assert_eq!((p.kind.clone(), p.gross, p.net), (LineKind::Payout, None, money(-100_000, "EUR")));
    assert_eq!(p.modification_reference.as_deref(), Some("TX123 batch 1300, TallyShopEU"), "a quoted comma");
    assert_eq!((c.kind.clone(), c.net), (LineKind::Fee, money(15, "EUR")));
    assert_eq!(o.kind, LineKind::Unmapped);
    assert_eq!(report.unmapped.get("DepositCorrection"), Some(&1));
    assert!(report.lines.iter().all(|l| l.batch.as_deref() == Some("1300")));
}

#[test]
fn a_bad_adyen_file_is_refused_whole_naming_file_line_and_column() {
    let (header, rows) = adyen_docs_sample();
    let good = &rows[0];
    let replace = |from: &str, to: &str| good.replacen(from, to, 1);
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (replace(",5.00,", ",5.001,"), Some("Gross Credit (GC)"), "more precision"),
        (replace(",GBP,,5.00", ",GBX,,5.00"), Some("Gross Currency"), "unknown currency"),
        (replace(",4.88,", ",4.87,"), Some("Net Credit (NC)"), "is not gross"),
        (replace(",CET,", ",IST,"), Some("TimeZone"), "unambiguously"),
        (replace("2013-06-03 11:26:49", "03/06/2013 11:26"), Some("Creation Date"), "YYYY-MM-DD"),
        (replace(",3vpzf7,", ",4111111111111111,"), Some("Merchant Reference"), "card number"),
        (replace(",5.00,", ",5.00,1.00,"), None, "fields where the header has"),
        (good.rsplit_once(",visa").unwrap().0.to_owned(), None, "fields where the header has"),
    ];
    for (bad, column, says) in cases {
        let rows = [rows[1].clone(), bad];
        let err = adyen::report::parse("bad.csv", &csv(&header, &rows), None).unwrap_err();
        let message = refused_at(&err, 3, column);
        assert!(message.starts_with("bad.csv:3:") && message.contains(says), "{message}");
        assert!(!message.contains("4111111111111111"), "{message}");
        assert_eq!(err.total, 1, "only the bad line: {err:#?}");
    }
    // A header without a required column names it; nothing else is read.
    let without: Vec<String> =
        header.iter().map(|h| if h == "Net Currency" { "Net Curr".into() } else { h.clone() }).collect();
    let err = adyen::report::parse("h.csv", &csv(&without, &rows), None).unwrap_err();
    assert!(refused_at(&err, 1, Some("Net Currency")).contains("required column missing"));
    // A batch number that disagrees with the file's name.
    let mut settled = common_fields("Settled", "2026-07-01 09:00:00", "CET");
    settled.extend([("Net Currency", "EUR"), ("Net Credit (NC)", "1.00")]);
    let err = adyen::report::parse("batch_7.csv", &csv(&header_2026(), &[row_2026(&settled)]), Some(7)).unwrap_err();
    assert!(refused_at(&err, 2, Some("Batch Number")).contains("batch 1300 in a file named for batch 7"));
}

/// Stripe's default itemized columns plus the ids Tally matches by, in Stripe's documented names.
const STRIPE_HEADER: &str =
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,description,charge_id,payment_intent_id,automatic_payout_id";

fn stripe_options() -> stripe::report::Options {
    stripe::report::Options { account: "acct_1".into(), ..Default::default() }
}

#[test]
fn stripe_itemized_lines_parse_in_major_units_with_their_ids() {
    let body = format!(
        "{STRIPE_HEADER}\n\
         txn_1,2026-07-01 12:00:00,2026-07-03 00:00:00,usd,100.00,3.20,96.80,charge,ch_1,Order 1,ch_1,pi_1,po_9\n\
         txn_2,2026-07-01 13:00:00,2026-07-03 00:00:00,usd,-25.00,0.00,-25.00,refund,re_1,,ch_1,pi_1,po_9\n\
         txn_3,2026-07-01 14:00:00,2026-07-03 00:00:00,jpy,1234,0,1234,charge,ch_2,,ch_2,,\n\
         txn_4,2026-07-02 00:00:00,2026-07-02 00:00:00,usd,-1000.00,0.00,-1000.00,payout,po_9,,,,\n\
         txn_5,2026-07-02 00:00:00,2026-07-02 00:00:00,usd,-1.00,0.00,-1.00,network_cost,nc_1,,,,\n"
    );
    let report = stripe::report::parse("bal.csv", body.as_bytes(), &stripe_options()).unwrap();
    let [charge, refund, yen, payout, other] = &report.lines[..] else { panic!("{:?}", report.lines) };
    assert_eq!(
        (charge.kind.clone(), charge.gross, charge.fee.minor(), charge.net),
        (LineKind::Settled, Some(money(10_000, "USD")), 320, money(9_680, "USD"))
    );
    assert_eq!((charge.line_id.as_deref(), charge.payment_reference.as_deref()), (Some("txn_1"), Some("ch_1")));
    assert_eq!((charge.batch.as_deref(), charge.account.as_str()), (Some("po_9"), "acct_1"));
    assert_eq!(charge.booked_at, utc("2026-07-01T12:00:00Z"));
    assert_eq!((refund.kind.clone(), refund.net), (LineKind::Refunded, money(-2_500, "USD")));
    assert_eq!(
        (refund.payment_reference.as_deref(), refund.modification_reference.as_deref()),
        (Some("ch_1"), Some("re_1"))
    );
    assert_eq!(yen.gross, Some(money(1234, "JPY")), "yen have no minor unit");
    assert_eq!((payout.kind.clone(), payout.payment_reference.as_deref()), (LineKind::Payout, None));
    assert_eq!(other.kind, LineKind::Unmapped);
    assert_eq!(report.unmapped.get("network_cost"), Some(&1));
    assert!(report.unknown_columns.is_empty());
}

#[test]
fn stripe_columns_in_any_subset_and_order_with_a_comma_separator_parse_the_same() {
    let a = "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,charge_id\n\
             txn_1,2026-07-01 12:00:00,eur,100.50,1.50,99.00,charge,ch_1\n";
    let b = "net,payment_metadata[order],reporting_category,charge_id,fee,currency,created_utc,gross,balance_transaction_id,brand_new_column\n\
             \"99,00\",o-1,charge,ch_1,\"1,50\",eur,2026-07-01 12:00:00,\"100,50\",txn_1,z\n";
    let one = stripe::report::parse("a.csv", a.as_bytes(), &stripe_options()).unwrap();
    let comma = stripe::report::Options { decimal_separator: DecimalSeparator::Comma, ..stripe_options() };
    let two = stripe::report::parse("b.csv", b.as_bytes(), &comma).unwrap();
    assert_eq!(one.lines, two.lines);
    assert_eq!(two.unknown_columns, ["brand_new_column"], "metadata columns are documented, a new one is counted");
}

#[test]
fn a_bad_stripe_file_is_refused_whole_naming_file_line_and_column() {
    let good = "txn_1,2026-07-01 12:00:00,2026-07-03 00:00:00,usd,100.00,3.20,96.80,charge,ch_1,Order 1,ch_1,pi_1,po_9";
    let cases = [
        (good.replacen("100.00", "100.005", 1), Some("gross"), "more precision"),
        (good.replacen("100.00", "1e2", 1), Some("gross"), "malformed"),
        (good.replacen(",usd,", ",usx,", 1), Some("currency"), "unknown currency"),
        (good.replacen("96.80", "96.81", 1), Some("net"), "is not gross"),
        (good.replacen("2026-07-01 12:00:00", "1719835200", 1), Some("created_utc"), "YYYY-MM-DD"),
        (good.replacen(",charge,", ",,", 1), Some("reporting_category"), "required on every line"),
        (good.replacen("Order 1", "card 5555555555554444", 1), Some("description"), "card number"),
        (good.rsplit_once(',').unwrap().0.to_owned(), None, "fields where the header has"),
    ];
    for (bad, column, says) in cases {
        let body = format!("{STRIPE_HEADER}\n{good}\n{bad}\n");
        let err = stripe::report::parse("s.csv", body.as_bytes(), &stripe_options()).unwrap_err();
        let message = refused_at(&err, 3, column);
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("5555555555554444"));
        assert_eq!(err.total, 1, "{err:#?}");
    }
    let err =
        stripe::report::parse("s.csv", b"balance_transaction_id,gross\ntxn_1,1.00\n", &stripe_options()).unwrap_err();
    for missing in ["created_utc", "currency", "fee", "net", "reporting_category"] {
        refused_at(&err, 1, Some(missing));
    }
    assert!(stripe::report::parse("e.csv", b"", &stripe_options()).is_err());
}

/// The ledger's effect of one booked line, by account: what ADR 0015 §4 says a line does to the books.
/// The one fact of a line settled in one currency.
fn one(facts: Vec<tally_domain::PaymentEvent>) -> Option<tally_domain::PaymentEvent> {
    assert!(facts.len() <= 1, "{facts:#?}");
    facts.into_iter().next()
}

fn effect(fact: &tally_domain::PaymentEvent) -> std::collections::BTreeMap<String, i64> {
    let journal = tally_domain::ledger::postings(fact).unwrap().expect("a settlement line moves money");
    assert!(journal.is_balanced());
    let mut out = std::collections::BTreeMap::new();
    for e in journal.entries {
        *out.entry(e.account.to_string()).or_insert(0) += e.money.amount.minor();
    }
    out
}

#[test]
fn report_lines_book_the_balance_by_net_the_receivable_by_gross_and_the_rest_as_fees() {
    let body = format!(
        "{STRIPE_HEADER}\n\
         txn_1,2026-07-01 12:00:00,2026-07-03 00:00:00,usd,100.00,3.20,96.80,charge,ch_1,Order 1,ch_1,pi_1,po_9\n\
         txn_2,2026-07-01 13:00:00,2026-07-03 00:00:00,usd,-25.00,0.00,-25.00,refund,re_1,,ch_1,pi_1,po_9\n\
         txn_3,2026-07-01 14:00:00,2026-07-03 00:00:00,usd,-40.00,15.00,-55.00,dispute,dp_1,,ch_1,pi_1,po_9\n\
         txn_4,2026-07-02 00:00:00,2026-07-02 00:00:00,usd,-1000.00,0.00,-1000.00,payout,po_9,,,,\n\
         txn_5,2026-07-02 00:00:00,2026-07-02 00:00:00,usd,-1.00,0.00,-1.00,network_cost,nc_1,,,,\n\
         txn_6,2026-07-02 00:00:00,2026-07-02 00:00:00,usd,-2.00,0.00,-2.00,fee,fee_1,,,,\n"
    );
    let report = stripe::report::parse("bal.csv", body.as_bytes(), &stripe_options()).unwrap();
    let at = utc("2026-07-04T00:00:00Z");
    let facts: Vec<_> = report.lines.iter().map(|l| one(l.facts(&report.sha256, at).unwrap())).collect();
    let [Some(charge), Some(refund), Some(dispute), Some(payout), None, Some(fee)] = &facts[..] else {
        panic!("{facts:#?}")
    };
    let map = |pairs: &[(&str, i64)]| pairs.iter().map(|(a, m)| (a.to_string(), *m)).collect();
    assert_eq!(effect(charge), map(&[("cash:stripe", 9_680), ("psp_fees", 320), ("psp_receivable:stripe", -10_000)]));
    assert_eq!(effect(refund), map(&[("cash:stripe", -2_500), ("psp_receivable:stripe", 2_500)]));
    // The webhook booked the dispute fee already: the line settles its whole net against the receivable.
    assert_eq!(effect(dispute), map(&[("cash:stripe", -5_500), ("psp_receivable:stripe", 5_500)]));
    // A connected account's payout pays the merchant: the `payout.paid` webhook's own fact (one booking).
    assert_eq!(effect(payout), map(&[("cash:stripe", -100_000), ("merchant_payable:acct_1", 100_000)]));
    let webhook_payout = tally_domain::FactIdentity {
        psp: tally_domain::Psp::Stripe,
        kind: tally_domain::EventKind::Payout,
        psp_reference: "po_9",
        original_reference: None,
    };
    assert_eq!((payout.kind, payout.fact_key()), (tally_domain::EventKind::Payout, webhook_payout.key()));
    // The platform's own payout moves its balance to the bank account.
    let platform = stripe::report::parse("bal.csv", body.as_bytes(), &Default::default()).unwrap();
    let own = one(platform.lines[3].facts(&platform.sha256, at).unwrap()).unwrap();
    assert_eq!(effect(&own), map(&[("cash:bank", 100_000), ("cash:stripe", -100_000)]));
    assert_eq!(effect(fee), map(&[("cash:stripe", -200), ("psp_fees", 200)]));
    // Lineage and identity: the file and the line; the charge's payment, as the webhook names it.
    assert_eq!(charge.source_event_id, format!("{}:2", report.sha256));
    assert_eq!((charge.payment_id.as_str(), charge.merchant_id.as_str()), ("stripe:ch_1", "acct_1"));
    assert_eq!(charge.source, tally_domain::Source::SettlementReport);
    assert_eq!(payout.payment_id, "stripe:po_9");
    assert_eq!(fee.payment_id, "stripe:acct_1");
    // The same line in another file (or twice in one) is the same fact; another line is another.
    let again = one(report.lines[0].facts("other-file", at).unwrap()).unwrap();
    assert_eq!(again.fact_key(), charge.fact_key());
    assert_ne!(refund.fact_key(), charge.fact_key());
}

#[test]
fn a_line_the_books_cannot_take_is_refused_with_its_line_and_kept_unbooked() {
    let mut settled = common_fields("Settled", "2026-07-01 09:00:00", "CEST");
    settled.extend([
        ("Psp Reference", "8816000000000001"),
        ("Gross Currency", "USD"),
        ("Gross Credit (GC)", "100.00"),
        ("Exchange Rate", "0.9"),
        ("Net Currency", "EUR"),
        ("Net Debit (NC)", "88.00"),
        ("Commission (NC)", "2.00"),
    ]);
    let mut rebate = common_fields("PaymentCost", "2026-07-02 10:00:00", "CEST");
    rebate.extend([("Psp Reference", "8816000000000001"), ("Net Currency", "EUR"), ("Net Credit (NC)", "0.15")]);
    let mut refund = common_fields("Refunded", "2026-07-02 10:00:00", "CEST");
    refund.extend([
        ("Psp Reference", "8816000000000003"),
        ("Modification Reference", "8816000000000004"),
        ("Gross Currency", "EUR"),
        ("Gross Debit (GC)", "10.00"),
        ("Net Currency", "EUR"),
        ("Net Debit (NC)", "10.12"),
        ("Commission (NC)", "0.12"),
    ]);
    let rows = [row_2026(&settled), row_2026(&rebate), row_2026(&refund)];
    let report = adyen::report::parse("batch_1300.csv", &csv(&header_2026(), &rows), Some(1300)).unwrap();
    let at = utc("2026-07-04T00:00:00Z");
    // A gross and a net that differ in sign cannot be one conversion.
    let fx = report.lines[0].facts(&report.sha256, at).unwrap_err();
    assert_eq!(fx.line, 2);
    assert!(fx.reason.contains("a conversion keeps the sign"), "{fx}");
    let credit = report.lines[1].facts(&report.sha256, at).unwrap_err();
    assert_eq!(credit.line, 3);
    assert!(credit.reason.contains("does not debit the balance"), "{credit}");
    // An Adyen refund with a commission on top: the receivable by the gross, the fee to psp_fees.
    let booked = one(report.lines[2].facts(&report.sha256, at).unwrap()).unwrap();
    assert_eq!(booked.kind, tally_domain::EventKind::SettledDebit);
    let effect = effect(&booked);
    assert_eq!(effect["psp_receivable:adyen"], 1_000);
    assert_eq!((effect["psp_fees"], effect["cash:adyen"]), (12, -1_012));
    assert_eq!((booked.payment_id.as_str(), booked.merchant_id.as_str()), ("adyen:8816000000000003", "TallyShopEU"));
}

#[test]
fn a_line_settled_across_currencies_settles_each_currencys_receivable_through_the_conversion_account() {
    use tally_domain::EventKind::{ConversionIn, ConversionOut, SettledCredit, SettledDebit};
    // A USD 100.00 capture settled as EUR 88.00 net after EUR 2.00 of fees; a USD 10.00 refund settled as EUR 9.12
    // taken, EUR 0.12 of it the commission.
    let mut settled = common_fields("Settled", "2026-07-01 09:00:00", "CEST");
    settled.extend([
        ("Psp Reference", "8816000000000001"),
        ("Gross Currency", "USD"),
        ("Gross Credit (GC)", "100.00"),
        ("Exchange Rate", "0.9"),
        ("Net Currency", "EUR"),
        ("Net Credit (NC)", "88.00"),
        ("Commission (NC)", "0.50"),
        ("Interchange (NC)", "1.50"),
    ]);
    let mut refund = common_fields("Refunded", "2026-07-02 10:00:00", "CEST");
    refund.extend([
        ("Psp Reference", "8816000000000001"),
        ("Modification Reference", "8816000000000004"),
        ("Gross Currency", "USD"),
        ("Gross Debit (GC)", "10.00"),
        ("Exchange Rate", "0.9"),
        ("Net Currency", "EUR"),
        ("Net Debit (NC)", "9.12"),
        ("Commission (NC)", "0.12"),
    ]);
    let report = adyen::report::parse(
        "batch_1300.csv",
        &csv(&header_2026(), &[row_2026(&settled), row_2026(&refund)]),
        Some(1300),
    )
    .unwrap();
    let at = utc("2026-07-04T00:00:00Z");
    let credit = report.lines[0].facts(&report.sha256, at).unwrap();
    let debit = report.lines[1].facts(&report.sha256, at).unwrap();
    let shape =
        |facts: &[tally_domain::PaymentEvent]| -> Vec<(tally_domain::EventKind, i64, &'static str, Option<i64>)> {
            facts
                .iter()
                .map(|f| (f.kind, f.money.amount.minor(), f.money.currency.code(), f.fee.map(|a| a.minor())))
                .collect()
        };
    // The line's own fact in the net currency (converted gross = net + fee), then the receivable's conversion.
    assert_eq!(
        shape(&credit),
        [
            (SettledCredit, 9_000, "EUR", Some(200)),
            (ConversionOut, 10_000, "USD", None),
            (ConversionIn, 9_000, "EUR", None)
        ]
    );
    assert_eq!(
        shape(&debit),
        [(SettledDebit, 900, "EUR", Some(12)), (ConversionOut, 900, "EUR", None), (ConversionIn, 1_000, "USD", None)]
    );
    // One line, three facts with three keys, each the line's lineage; the same line again is the same three.
    let keys: std::collections::BTreeSet<_> = credit.iter().chain(&debit).map(|f| f.fact_key()).collect();
    assert_eq!(keys.len(), 6);
    assert!(credit.iter().all(|f| f.source_event_id == format!("{}:2", report.sha256)));
    let again = report.lines[0].facts("another-file", at).unwrap();
    assert_eq!(
        again.iter().map(|f| f.fact_key()).collect::<Vec<_>>(),
        credit.iter().map(|f| f.fact_key()).collect::<Vec<_>>()
    );
    // With the webhook's capture and refund (in USD): every receivable is zero; the conversion account holds
    // what was converted, per currency; the balance and the fees are in EUR.
    let capture = tally_domain::PaymentEvent {
        kind: tally_domain::EventKind::Captured,
        money: tally_money::Money::new(
            tally_money::Amount::from_minor(10_000),
            tally_money::Currency::from_code("USD").unwrap(),
        ),
        fee: None,
        source: tally_domain::Source::Webhook,
        ..credit[0].clone()
    };
    let refunded = tally_domain::PaymentEvent {
        kind: tally_domain::EventKind::Refunded,
        psp_reference: "8816000000000004".into(),
        money: tally_money::Money::new(
            tally_money::Amount::from_minor(1_000),
            tally_money::Currency::from_code("USD").unwrap(),
        ),
        ..capture.clone()
    };
    let all: Vec<_> = credit.iter().chain(&debit).chain([&capture, &refunded]).cloned().collect();
    let balances = tally_domain::ledger::balances(&all).unwrap();
    let get = |account: &str, currency: &str| {
        balances
            .iter()
            .find(|((a, c), _)| a.to_string() == account && c.code() == currency)
            .map_or(0, |(_, m)| m.minor())
    };
    assert_eq!((get("psp_receivable:adyen", "USD"), get("psp_receivable:adyen", "EUR")), (0, 0));
    assert_eq!((get("fx_conversion:adyen", "USD"), get("fx_conversion:adyen", "EUR")), (9_000, -8_100));
    assert_eq!((get("cash:adyen", "EUR"), get("psp_fees", "EUR")), (8_800 - 912, 200 + 12));
    assert_eq!(get("merchant_payable:TallyShopEU", "USD"), -9_000);
}
