//! The PSPs' documented sequences, as scenario tables over the shared fixtures: what Tally books for each, stated
//! in money (balances per account) and payment status — and, where order could matter, for every arrival order.
//! Each scenario names the issue item it guards (issue 12).

mod common;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tally_domain::ledger::balances;
use tally_domain::status::{derive_status, PaymentStatus};
use tally_domain::{EventKind, PaymentEvent, Psp, Timestamp};
use tally_psp::{normalize, CaptureMode, CaptureModes, Endpoint, NormalizeError, Outcome};

fn at() -> Timestamp {
    Timestamp::from_unix_secs(1_800_000_000).unwrap()
}

fn test_endpoint() -> Endpoint {
    Endpoint::default()
}

// ---- Adyen --------------------------------------------------------------------------------------------------------

/// One notification item, from the shared CAPTURE fixture with fields replaced.
fn item(code: &str, psp_reference: &str, original: Option<&str>, value: i64, success: bool) -> Value {
    let mut n = common::json("adyen/notifications/capture-true.json");
    let mut it = n["notificationItems"][0]["NotificationRequestItem"].take();
    it["eventCode"] = json!(code);
    it["pspReference"] = json!(psp_reference);
    it["originalReference"] = match original {
        Some(o) => json!(o),
        None => Value::Null,
    };
    if original.is_none() {
        it.as_object_mut().unwrap().remove("originalReference");
    }
    it["amount"]["value"] = json!(value);
    it["success"] = json!(if success { "true" } else { "false" });
    it
}

fn batch(live: bool, items: Vec<Value>) -> Vec<u8> {
    let items: Vec<Value> = items.into_iter().map(|i| json!({ "NotificationRequestItem": i })).collect();
    serde_json::to_vec(&json!({ "live": if live { "true" } else { "false" }, "notificationItems": items })).unwrap()
}

fn adyen(items: Vec<Value>, endpoint: &Endpoint) -> Result<Vec<Outcome>, NormalizeError> {
    normalize(Psp::Adyen, &batch(endpoint.live, items), at(), endpoint)
}

fn events_of(outcomes: &[Outcome]) -> Vec<PaymentEvent> {
    outcomes
        .iter()
        .flat_map(|o| match o {
            Outcome::Events(e) => e.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The facts of each delivery, delivered one by one.
fn deliveries(items: &[Value], endpoint: &Endpoint) -> Vec<Vec<PaymentEvent>> {
    items.iter().map(|i| events_of(&adyen(vec![i.clone()], endpoint).unwrap())).collect()
}

/// Balances as (account, minor) with zero balances left out, for readable expectations.
fn money(events: &[PaymentEvent]) -> BTreeMap<String, i64> {
    balances(events)
        .unwrap()
        .into_iter()
        .filter(|(_, a)| !a.is_zero())
        .map(|((account, _), a)| (account.to_string(), a.minor()))
        .collect()
}

fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(a, m)| (a.to_string(), *m)).collect()
}

/// Every permutation of `n` indices (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn go(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    go(n, &mut (0..n).collect(), &mut out);
    out
}

/// For every arrival order of the deliveries: the same money and status as `want`.
fn in_every_order(
    name: &str,
    facts: &[Vec<PaymentEvent>],
    want_money: &BTreeMap<String, i64>,
    want_status: PaymentStatus,
) {
    for order in permutations(facts.len()) {
        let arrived: Vec<PaymentEvent> = order.iter().flat_map(|i| facts[*i].clone()).collect();
        assert_eq!(&money(&arrived), want_money, "{name}, order {order:?}");
        assert_eq!(derive_status(&arrived), Some(want_status), "{name}, order {order:?}");
    }
}

const M: &str = "MagentoMerchantTest2";

#[test]
fn item_1_an_unknown_event_code_is_ignored_alone_and_the_rest_of_the_batch_is_booked() {
    let outcomes = adyen(
        vec![item("CAPTURE", "CAP1", Some("PAY1"), 1000, true), item("BRAND_NEW_CODE", "X1", Some("PAY1"), 1000, true)],
        &test_endpoint(),
    )
    .unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(matches!(&outcomes[0], Outcome::Events(e) if e.len() == 1 && e[0].kind == EventKind::Captured));
    assert_eq!(outcomes[1], Outcome::Unknown { event_type: "BRAND_NEW_CODE".into() });
}

#[test]
fn item_2_capture_failed_reverses_the_booked_capture_in_every_order() {
    let items = [
        item("AUTHORISATION", "PAY1", None, 1000, true),
        item("CAPTURE", "CAP1", Some("PAY1"), 1000, true),
        item("CAPTURE_FAILED", "CAP1", Some("PAY1"), 1000, true),
    ];
    in_every_order("capture failed", &deliveries(&items, &test_endpoint()), &expect(&[]), PaymentStatus::CaptureFailed);
    // … and when the scheme's re-capture follows, the money is booked once again.
    let mut with_recapture = items.to_vec();
    let mut recapture = item("CAPTURE", "CAP1", Some("PAY1"), 1000, true);
    recapture["reason"] = json!("Transaction Recaptured");
    with_recapture.push(recapture);
    in_every_order(
        "recaptured",
        &deliveries(&with_recapture, &test_endpoint()),
        &expect(&[("psp_receivable:adyen", 1000), (&format!("merchant_payable:{M}"), -1000)]),
        PaymentStatus::Captured,
    );
}

#[test]
fn item_3_each_dispute_stage_is_its_own_fact_and_status_follows_the_stage_order() {
    let stages = |last: &str| {
        [
            item("CAPTURE", "CAP1", Some("PAY1"), 1000, true),
            item("CHARGEBACK", "DSP1", Some("PAY1"), 1000, true),
            item("CHARGEBACK_REVERSED", "DSP1", Some("PAY1"), 1000, true),
            item("SECOND_CHARGEBACK", "DSP1", Some("PAY1"), 1000, true),
            item(last, "DSP1", Some("PAY1"), 1000, true),
        ]
    };
    let captured_only = expect(&[("psp_receivable:adyen", 1000), (&format!("merchant_payable:{M}"), -1000)]);
    // The merchant won: the funds are back and nothing is lost, whatever the arrival order (5! orders).
    in_every_order(
        "pre-arbitration won",
        &deliveries(&stages("PREARBITRATION_WON"), &test_endpoint()),
        &captured_only,
        PaymentStatus::ChargebackWon,
    );
    in_every_order(
        "pre-arbitration lost",
        &deliveries(&stages("PREARBITRATION_LOST"), &test_endpoint()),
        &expect(&[("chargeback_losses", 1000), (&format!("merchant_payable:{M}"), -1000)]),
        PaymentStatus::ChargebackLost,
    );
    // Every stage has a key of its own.
    let facts: Vec<PaymentEvent> = deliveries(&stages("PREARBITRATION_WON"), &test_endpoint()).concat();
    let keys: std::collections::BTreeSet<_> = facts.iter().map(|e| (e.kind, e.fact_key())).collect();
    let kinds: std::collections::BTreeSet<_> = keys.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys.len(), kinds.len(), "one key per stage");
    assert!(kinds.contains(&EventKind::SecondChargeback) && kinds.contains(&EventKind::PrearbitrationWon));
}

#[test]
fn item_4_cancel_or_refund_without_an_action_is_an_exception_not_a_cancellation() {
    let out = adyen(vec![item("CANCEL_OR_REFUND", "MOD1", Some("PAY1"), 1000, true)], &test_endpoint()).unwrap();
    assert!(matches!(&out[0], Outcome::Exception { reason, .. } if reason.contains("modification.action")), "{out:?}");
    let mut refund = item("CANCEL_OR_REFUND", "MOD1", Some("PAY1"), 1000, true);
    refund["additionalData"]["modification.action"] = json!("refund");
    let mut cancel = refund.clone();
    cancel["additionalData"]["modification.action"] = json!("cancel");
    let kinds =
        |i: Value| events_of(&adyen(vec![i], &test_endpoint()).unwrap()).iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(kinds(refund), vec![EventKind::Refunded]);
    assert_eq!(kinds(cancel), vec![EventKind::Canceled]);
}

#[test]
fn item_5_what_the_ledger_would_refuse_is_refused_before_the_2xx() {
    // A zero capture: the posting rules refuse it, so the edge does too (a 400 the PSP sees, not a DLQ record).
    let err = adyen(vec![item("CAPTURE", "CAP1", Some("PAY1"), 0, true)], &test_endpoint()).unwrap_err();
    assert_eq!(err.code(), "invalid_amount", "{err}");
    // Text the ledger's database cannot store.
    let mut nul = item("CAPTURE", "CAP1", Some("PAY1"), 100, true);
    nul["merchantAccountCode"] = json!("Merchant\u{0}X");
    let err = adyen(vec![nul], &test_endpoint()).unwrap_err();
    assert!(matches!(err, NormalizeError::NotBookable { .. }), "{err}");
    // A negative Stripe refund.
    let mut body = stripe_event("refund.created", refund_object("re_1", "ch_1", -5, "succeeded"));
    body["api_version"] = json!("2025-03-31.basil");
    assert_eq!(stripe(&body, &test_endpoint()).unwrap_err().code(), "invalid_amount");
}

#[test]
fn item_11_a_notification_of_the_other_mode_is_never_booked() {
    let live = Endpoint { live: true, ..Endpoint::default() };
    let body = batch(false, vec![item("CAPTURE", "CAP1", Some("PAY1"), 1000, true)]);
    assert_eq!(
        normalize(Psp::Adyen, &body, at(), &live).unwrap(),
        vec![Outcome::OtherMode { event_type: "CAPTURE".into(), live: false }]
    );
    assert_eq!(events_of(&normalize(Psp::Adyen, &body, at(), &test_endpoint()).unwrap()).len(), 1);
    // The shared live chargeback fixture is booked at a live endpoint.
    let chargeback = common::read("adyen/notifications/chargeback.json");
    let facts = events_of(&normalize(Psp::Adyen, &chargeback, at(), &live).unwrap());
    assert_eq!(facts.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EventKind::ChargebackOpened]);
    // Stripe: a connected account's test event at the live endpoint, signed with the live secret.
    let mut event = common::json("stripe/webhook-events/charge.captured.json");
    assert_eq!(event["livemode"], json!(false));
    assert!(matches!(stripe(&event, &live).unwrap(), Outcome::OtherMode { live: false, .. }));
    event["livemode"] = json!(true);
    assert!(matches!(stripe(&event, &live).unwrap(), Outcome::Events(_)));
    assert!(matches!(stripe(&event, &test_endpoint()).unwrap(), Outcome::OtherMode { live: true, .. }));
}

#[test]
fn item_13_an_adyen_chargeback_repeated_with_dispute_status_lost_writes_the_reserve_off() {
    let mut lost = item("CHARGEBACK", "DSP1", Some("PAY1"), 1000, true);
    lost["additionalData"]["disputeStatus"] = json!("Lost");
    let mut first = item("CHARGEBACK", "DSP1", Some("PAY1"), 1000, true);
    first["additionalData"]["disputeStatus"] = json!("Undefended");
    let items = [item("CAPTURE", "CAP1", Some("PAY1"), 1000, true), first, lost];
    in_every_order(
        "chargeback lost",
        &deliveries(&items, &test_endpoint()),
        &expect(&[("chargeback_losses", 1000), (&format!("merchant_payable:{M}"), -1000)]),
        PaymentStatus::ChargebackLost,
    );
    let info = adyen(vec![item("DISPUTE_OPENED_WITH_CHARGEBACK", "DSP1", Some("PAY1"), 1000, true)], &test_endpoint());
    assert!(matches!(&info.unwrap()[0], Outcome::Ignored { reason, .. } if reason.contains("information only")));
}

#[test]
fn item_14_a_refund_that_flips_to_failed_is_reversed_in_every_order() {
    let items = [
        item("CAPTURE", "CAP1", Some("PAY1"), 1000, true),
        item("REFUND", "REF1", Some("PAY1"), 400, true),
        item("REFUND", "REF1", Some("PAY1"), 400, false),
    ];
    let captured = expect(&[("psp_receivable:adyen", 1000), (&format!("merchant_payable:{M}"), -1000)]);
    in_every_order("refund flipped", &deliveries(&items, &test_endpoint()), &captured, PaymentStatus::Captured);
    // A refund refused from the start moves nothing either; REFUND_FAILED alone reverses nothing that was not booked.
    in_every_order(
        "refused",
        &deliveries(&[items[0].clone(), items[2].clone()], &test_endpoint()),
        &captured,
        PaymentStatus::Captured,
    );
    let failed = item("REFUND_FAILED", "REF1", Some("PAY1"), 400, true);
    in_every_order(
        "refund failed",
        &deliveries(&[items[0].clone(), failed], &test_endpoint()),
        &captured,
        PaymentStatus::Captured,
    );
}

#[test]
fn item_15_immediate_capture_books_the_capture_from_the_authorisation_once() {
    let endpoint = Endpoint {
        adyen_capture: CaptureModes {
            default: CaptureMode::Delayed,
            accounts: BTreeMap::from([(M.to_owned(), CaptureMode::Immediate)]),
        },
        ..Endpoint::default()
    };
    let auth = item("AUTHORISATION", "PAY1", None, 1000, true);
    let captured = expect(&[("psp_receivable:adyen", 1000), (&format!("merchant_payable:{M}"), -1000)]);
    in_every_order(
        "immediate",
        &deliveries(std::slice::from_ref(&auth), &endpoint),
        &captured,
        PaymentStatus::Captured,
    );
    // A CAPTURE the account also sends is the same capture, not a second one.
    let both = [auth.clone(), item("CAPTURE", "CAP1", Some("PAY1"), 1000, true)];
    in_every_order("immediate + CAPTURE", &deliveries(&both, &endpoint), &captured, PaymentStatus::Captured);
    // With delayed capture the authorisation moves nothing.
    assert_eq!(money(&deliveries(std::slice::from_ref(&auth), &test_endpoint()).concat()), expect(&[]));
}

// ---- Stripe -------------------------------------------------------------------------------------------------------

fn stripe_event(event_type: &str, object: Value) -> Value {
    let mut e = common::json("stripe/webhook-events/charge.captured.json");
    e["id"] = json!(format!("evt_{event_type}"));
    e["type"] = json!(event_type);
    e["data"] = json!({ "object": object });
    e
}

fn stripe(event: &Value, endpoint: &Endpoint) -> Result<Outcome, NormalizeError> {
    let mut out = normalize(Psp::Stripe, &serde_json::to_vec(event).unwrap(), at(), endpoint)?;
    assert_eq!(out.len(), 1);
    Ok(out.remove(0))
}

fn stripe_facts(event: &Value) -> Vec<PaymentEvent> {
    match stripe(event, &test_endpoint()).unwrap() {
        Outcome::Events(e) => e,
        other => panic!("{other:?}"),
    }
}

fn charge(id: &str, amount: i64, captured: Option<i64>) -> Value {
    let mut ch = common::json("stripe/webhook-events/charge.captured.json")["data"]["object"].clone();
    ch["id"] = json!(id);
    ch["amount"] = json!(amount);
    ch["captured"] = json!(captured.is_some());
    ch["amount_captured"] = json!(captured.unwrap_or(0));
    ch
}

fn refund_object(id: &str, charge: &str, amount: i64, status: &str) -> Value {
    let mut r = common::json("stripe/webhook-events/charge.refund.updated.json")["data"]["object"].clone();
    r["id"] = json!(id);
    r["charge"] = json!(charge);
    r["amount"] = json!(amount);
    r["status"] = json!(status);
    r
}

const P: &str = "merchant_payable:platform";

#[test]
fn item_4_a_capture_that_cannot_name_its_charge_is_not_keyed_by_the_intent() {
    let mut pi = common::json("stripe/webhook-events/payment_intent.succeeded.json");
    pi["data"]["object"]["charges"]["data"] = json!([]);
    pi["data"]["object"]["latest_charge"] = Value::Null;
    assert!(
        matches!(stripe(&pi, &test_endpoint()).unwrap(), Outcome::Ignored { reason, .. } if reason.contains("names no charge"))
    );
    // No money field defaults: a missing amount_received is a schema violation, not a zero capture.
    let mut pi = common::json("stripe/webhook-events/payment_intent.succeeded.json");
    pi["data"]["object"].as_object_mut().unwrap().remove("amount_received");
    assert_eq!(stripe(&pi, &test_endpoint()).unwrap_err().code(), "schema_violation");
    let mut ch = stripe_event("charge.captured", charge("ch_1", 1000, Some(700)));
    ch["data"]["object"].as_object_mut().unwrap().remove("amount_captured");
    assert_eq!(stripe(&ch, &test_endpoint()).unwrap_err().code(), "schema_violation");
}

#[test]
fn item_10_a_released_authorization_is_not_a_refund() {
    // Before basil: 1000 authorised, 700 captured; the 300 remainder comes back as a Refund, next to a real
    // refund of 200 later.
    let captured = stripe_facts(&stripe_event("charge.captured", charge("ch_1", 1000, Some(700))));
    let mut refunded = charge("ch_1", 1000, Some(700));
    let mut release = refund_object("re_release", "ch_1", 300, "succeeded");
    release["created"] = json!(1_700_000_000);
    let mut real = refund_object("re_real", "ch_1", 200, "succeeded");
    real["created"] = json!(1_700_000_100);
    refunded["refunds"] = json!({ "object": "list", "data": [real, release] });
    let refunds = stripe_facts(&stripe_event("charge.refunded", refunded));
    let kinds: Vec<_> = refunds.iter().map(|e| (e.kind, e.psp_reference.as_str())).collect();
    assert_eq!(kinds, vec![(EventKind::Refunded, "re_real"), (EventKind::Canceled, "re_release")]);
    let all = [captured, refunds].concat();
    assert_eq!(money(&all), expect(&[("psp_receivable:stripe", 500), (P, -500)]));
    assert_eq!(derive_status(&all), Some(PaymentStatus::PartiallyRefunded));

    // An uncaptured charge cancelled before basil: its "refund" is the release of the authorization.
    let mut uncaptured = charge("ch_2", 1000, None);
    uncaptured["refunds"] = json!({ "object": "list", "data": [refund_object("re_2", "ch_2", 1000, "succeeded")] });
    let auth = stripe_facts(&stripe_event("charge.succeeded", charge("ch_2", 1000, None)));
    let released = [auth, stripe_facts(&stripe_event("charge.refunded", uncaptured))].concat();
    assert_eq!(money(&released), expect(&[]));
    assert_eq!(derive_status(&released), Some(PaymentStatus::Canceled));

    // A bare Refund object before basil cannot be told apart: an exception to review, never booked.
    let bare = stripe_event("refund.created", refund_object("re_3", "ch_3", 300, "succeeded"));
    assert!(
        matches!(stripe(&bare, &test_endpoint()).unwrap(), Outcome::Exception { reason, .. } if reason.contains("basil"))
    );
    let mut basil = bare.clone();
    basil["api_version"] = json!("2025-03-31.basil");
    assert_eq!(stripe_facts(&basil).iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EventKind::Refunded]);

    // On basil and later, cancellation and expiry arrive as their own events.
    let mut canceled = common::json("stripe/webhook-events/payment_intent.canceled.json");
    canceled["data"]["object"]["latest_charge"] = json!("ch_4");
    let auth = stripe_facts(&stripe_event("charge.succeeded", charge("ch_4", 1000, None)));
    let facts = [auth.clone(), stripe_facts(&canceled)].concat();
    assert_eq!(derive_status(&facts), Some(PaymentStatus::Canceled));
    let expired = stripe_facts(&stripe_event("charge.expired", charge("ch_4", 1000, None)));
    assert_eq!(expired[0].fact_key(), stripe_facts(&canceled)[0].fact_key(), "one release, however stated");
}

#[test]
fn item_12_stripe_mga_is_zero_decimal_on_the_wire() {
    let mut ch = charge("ch_1", 5000, Some(5000));
    ch["currency"] = json!("mga");
    let facts = stripe_facts(&stripe_event("charge.captured", ch));
    assert_eq!((facts[0].money.amount.minor(), facts[0].money.currency.code()), (500_000, "MGA"));
}

#[test]
fn item_13_a_dispute_reinstated_in_part_books_the_part_and_the_loss() {
    let mut dp = common::json("stripe/webhook-events/charge.dispute.funds_withdrawn.json")["data"]["object"].clone();
    dp["amount"] = json!(1000);
    dp["charge"] = json!("ch_1");
    let withdrawal =
        json!({"id": "txn_w", "object": "balance_transaction", "amount": -1000, "currency": "usd", "fee": 1500});
    let reinstatement =
        json!({"id": "txn_r", "object": "balance_transaction", "amount": 600, "currency": "usd", "fee": 0});
    dp["balance_transactions"] = json!([withdrawal]);
    let withdrawn = stripe_facts(&stripe_event("charge.dispute.funds_withdrawn", dp.clone()));
    dp["balance_transactions"] = json!([withdrawal, reinstatement]);
    let reinstated = stripe_facts(&stripe_event("charge.dispute.funds_reinstated", dp.clone()));
    dp["status"] = json!("lost");
    let closed = stripe_facts(&stripe_event("charge.dispute.closed", dp.clone()));
    let captured = stripe_facts(&stripe_event("charge.captured", charge("ch_1", 1000, Some(1000))));
    let facts = [captured, withdrawn, reinstated, closed];
    for order in permutations(facts.len()) {
        let arrived: Vec<PaymentEvent> = order.iter().flat_map(|i| facts[*i].clone()).collect();
        assert_eq!(
            money(&arrived),
            expect(&[("chargeback_losses", 400), ("psp_fees", 1500), ("psp_receivable:stripe", -900), (P, -1000)]),
            "{order:?}"
        );
        assert_eq!(derive_status(&arrived), Some(PaymentStatus::ChargebackLost));
    }
    // The close alone (funds_withdrawn never subscribed to, say) states the withdrawal's fee as well, under the
    // same key: the fee is booked whichever event arrives, once.
    let fee_of = |facts: &[PaymentEvent]| {
        facts.iter().filter(|f| f.kind == tally_domain::EventKind::Fee).map(|f| f.fact_key()).collect::<Vec<_>>()
    };
    assert_eq!(fee_of(&facts[3]), fee_of(&facts[1]));
    assert_eq!(fee_of(&facts[3]).len(), 1);
    // Won in full: the disputed funds back, nothing lost; the fee Stripe took with the withdrawal stays taken.
    dp["balance_transactions"] = json!([withdrawal, {"id": "txn_r", "amount": 1000, "currency": "usd", "fee": 0}]);
    dp["status"] = json!("won");
    let won = stripe_facts(&stripe_event("charge.dispute.closed", dp));
    assert_eq!(money(&won), expect(&[("psp_fees", 1500), ("psp_receivable:stripe", -1500)]));
    assert_eq!(derive_status(&won), Some(PaymentStatus::ChargebackWon));
}
