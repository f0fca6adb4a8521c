//! Every webhook fixture in `shared/fixtures` normalises to the canonical events (or the ignore outcome) that its
//! content states. A new fixture file without an expectation here fails the test.

mod common;

use std::collections::BTreeMap;

use tally_domain::{EventKind, Psp, Timestamp};
use tally_psp::{normalize, Endpoint, Outcome};

/// (kind, payment id, psp reference, original reference, minor units, currency, merchant)
type Fact = (EventKind, &'static str, &'static str, Option<&'static str>, i64, &'static str, &'static str);

enum Expect {
    Events(Vec<Fact>),
    /// Ignored, with a reason containing this text.
    Ignored(&'static str),
    /// A data-quality exception, with a reason containing this text.
    Exception(&'static str),
    /// A notification of the other mode than the (test-mode) endpoint's: `live` as the notification says.
    OtherMode(bool),
}

use EventKind::*;
use Expect::*;

const CH24: &str = "ch_000000000000000000000000";
const CH14: &str = "ch_00000000000000";

fn stripe_expectations() -> BTreeMap<&'static str, Expect> {
    let p = "platform";
    // A fact about the zeroed charge of the Stripe CLI fixtures, on the platform account.
    let ch24 = |kind, minor| (kind, "stripe:ch_000000000000000000000000", CH24, None, minor, "USD", p);
    BTreeMap::from([
        ("balance.available.json", Ignored("moves no money")),
        ("charge.captured.json", Events(vec![ch24(Captured, 100)])),
        // The money a closed dispute moved is in its balance transactions; this fixture lists none.
        ("charge.dispute.closed.json", Exception("no balance_transactions")),
        ("charge.dispute.created.json", Ignored("funds_withdrawn")),
        // This fixture lists only the withdrawal: what was reinstated cannot be read, so nothing is assumed.
        ("charge.dispute.funds_reinstated.json", Exception("without a reinstating balance transaction")),
        (
            "charge.dispute.funds_withdrawn.json",
            Events(vec![
                (ChargebackOpened, "stripe:ch_00000000000000", CH14, None, 25000, "USD", p),
                (Fee, "stripe:ch_00000000000000", "txn_1Bl3mMGWCopOTFn18p8iALq8", Some(CH14), 1500, "USD", p),
            ]),
        ),
        ("charge.dispute.updated.json", Ignored("funds_withdrawn")),
        ("charge.failed.json", Events(vec![ch24(AuthorizationFailed, 2000)])),
        // API version 2020-08-27: a bare Refund object may be an authorization release.
        ("charge.refund.updated.json", Exception("before 2025-03-31.basil")),
        (
            "charge.refunded.json",
            Events(vec![(
                Refunded,
                "stripe:ch_000000000000000000000000",
                "re_000000000000000000000000",
                Some(CH24),
                100,
                "USD",
                p,
            )]),
        ),
        ("charge.succeeded.json", Events(vec![ch24(Authorized, 2000), ch24(Captured, 2000)])),
        ("charge.updated.json", Ignored("moves no money")),
        ("payment_intent.amount_capturable_updated.json", Events(vec![ch24(Authorized, 2000)])),
        ("payment_intent.canceled.json", Ignored("names no charge")),
        ("payment_intent.created.json", Ignored("moves no money")),
        ("payment_intent.payment_failed.json", Events(vec![ch24(AuthorizationFailed, 2000)])),
        ("payment_intent.processing.json", Ignored("moves no money")),
        ("payment_intent.requires_action.json", Ignored("moves no money")),
        ("payment_intent.succeeded.json", Events(vec![ch24(Captured, 2000)])),
        ("payout.created.json", Ignored("moves no money")),
        ("payout.paid.json", Ignored("platform's own balance")),
        ("payout.updated.json", Ignored("moves no money")),
        ("transfer.created.json", Ignored("moves no money")),
        ("transfer.failed.json", Ignored("retired event type")),
        ("transfer.paid.json", Ignored("retired event type")),
    ])
}

fn adyen_expectations() -> BTreeMap<&'static str, Expect> {
    let auth = |m: &'static str| Events(vec![(Authorized, "adyen:123456789", "123456789", None, 10100, "EUR", m)]);
    BTreeMap::from([
        ("authorisation-true.json", auth("MagentoMerchantTest2")),
        ("authorisation-true-additional-attribute.json", auth("MagentoMerchantTest2")),
        ("balancePlatform-transaction-created.json", Ignored("not a payment notification")),
        ("balancePlatform-transaction-created-bank-category.json", Ignored("not a payment notification")),
        (
            "cancellation-true.json",
            Events(vec![(
                Canceled,
                "adyen:8313547924770610",
                "8412534564722331",
                Some("8313547924770610"),
                500,
                "EUR",
                "YOUR_MERCHANT_ACCOUNT",
            )]),
        ),
        // A refused (or flipped) capture states the capture and its reversal: net nothing, in any order.
        (
            "capture-false.json",
            Events(
                [Captured, CaptureReversed]
                    .map(|k| {
                        (
                            k,
                            "adyen:ORIGINAL_PSP",
                            "PSP_REFERENCE",
                            Some("ORIGINAL_PSP"),
                            23623,
                            "USD",
                            "MagentoMerchantTest2",
                        )
                    })
                    .to_vec(),
            ),
        ),
        (
            "capture-true.json",
            Events(vec![(
                Captured,
                "adyen:ORIGINAL_PSP",
                "PSP_REFERENCE",
                Some("ORIGINAL_PSP"),
                23623,
                "USD",
                "MagentoMerchantTest2",
            )]),
        ),
        // A live notification: never booked at a test endpoint (the live endpoint books it: see below).
        ("chargeback.json", OtherMode(true)),
        ("display-notification.json", Ignored("not a payment notification")),
        ("event-invalid-notification.json", Ignored("not a payment notification")),
        ("event-notification-additional-attribute.json", Ignored("not a payment notification")),
        ("event-notification.json", Ignored("not a payment notification")),
        // A bare item without the `live` of its batch: which books it belongs to is unknown.
        ("hmac-validation-webhook.json", Exception("whether it is live")),
        ("management-webhook-payment-method-created-unknown-enum.json", Ignored("not a payment notification")),
        ("management-webhook-payment-method-created.json", Ignored("not a payment notification")),
        ("offer-closed.json", Ignored("moves no money")),
        (
            "refund-false.json",
            Events(
                [Refunded, RefundFailed]
                    .map(|k| {
                        (
                            k,
                            "adyen:ORIGINAL_PSP",
                            "PSP_REFERENCE",
                            Some("ORIGINAL_PSP"),
                            1500,
                            "EUR",
                            "MagentoMerchantTest2",
                        )
                    })
                    .to_vec(),
            ),
        ),
        (
            "refund-true.json",
            Events(vec![(
                Refunded,
                "adyen:ORIGINAL_PSP",
                "PSP_REFERENCE",
                Some("ORIGINAL_PSP"),
                1500,
                "EUR",
                "MagentoMerchantTest2",
            )]),
        ),
        ("tokenization-webhook-recurring-token-alreadyExisting.json", Ignored("not a payment notification")),
        ("tokenization-webhook-recurring-token-created.json", Ignored("not a payment notification")),
        ("tokenization-webhook-recurring-token-disabled.json", Ignored("not a payment notification")),
        ("tokenization-webhook-recurring-token-updated.json", Ignored("not a payment notification")),
    ])
}

fn check_all(psp: Psp, dir: &str, expectations: BTreeMap<&'static str, Expect>) {
    let received_at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let files = common::json_files(dir);
    let listed: Vec<&str> = expectations.keys().copied().collect();
    assert_eq!(files, listed, "every fixture file needs an expectation, and every expectation a file");
    for (file, expect) in expectations {
        let body = common::read(&format!("{dir}/{file}"));
        let outcomes =
            normalize(psp, &body, received_at, &Endpoint::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(outcomes.len(), 1, "{file}: one notification item");
        match (&outcomes[0], expect) {
            (Outcome::Events(events), Events(facts)) => {
                let got: Vec<Fact> = events
                    .iter()
                    .map(|e| {
                        (
                            e.kind,
                            leak(&e.payment_id),
                            leak(&e.psp_reference),
                            e.original_reference.as_deref().map(leak),
                            e.money.amount.minor(),
                            e.money.currency.code(),
                            leak(&e.merchant_id),
                        )
                    })
                    .collect();
                assert_eq!(got, facts, "{file}");
                for e in events {
                    assert_eq!(e.psp, psp);
                    assert_eq!(e.received_at, received_at);
                    assert!(e.occurred_at < received_at, "{file}: occurred_at comes from the payload");
                    assert!(!e.source_event_id.is_empty());
                }
            }
            (Outcome::Ignored { reason, event_type }, Ignored(text))
            | (Outcome::Exception { reason, event_type }, Exception(text)) => {
                assert!(reason.contains(text), "{file}: reason {reason:?} lacks {text:?}");
                assert!(!event_type.is_empty());
            }
            (Outcome::OtherMode { live, .. }, OtherMode(expected)) => assert_eq!(*live, expected, "{file}"),
            (got, _) => panic!("{file}: unexpected outcome {got:?}"),
        }
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[test]
fn every_stripe_webhook_fixture() {
    check_all(Psp::Stripe, "stripe/webhook-events", stripe_expectations());
}

#[test]
fn every_adyen_notification_fixture() {
    check_all(Psp::Adyen, "adyen/notifications", adyen_expectations());
}

#[test]
fn retried_deliveries_and_restated_facts_share_fact_keys() {
    let at = |s| Timestamp::from_unix_secs(s).unwrap();
    let facts =
        |file: &str, t| match &normalize(Psp::Stripe, &common::read(file), at(t), &Endpoint::default()).unwrap()[0] {
            Outcome::Events(e) => e.clone(),
            other => panic!("{other:?}"),
        };
    let first = facts("stripe/webhook-events/charge.succeeded.json", 1_800_000_000);
    let retry = facts("stripe/webhook-events/charge.succeeded.json", 1_800_000_500);
    assert_eq!(
        first.iter().map(|e| e.fact_key()).collect::<Vec<_>>(),
        retry.iter().map(|e| e.fact_key()).collect::<Vec<_>>()
    );
    // payment_intent.succeeded states the same capture of the same charge: the same fact.
    let pi = facts("stripe/webhook-events/payment_intent.succeeded.json", 1_800_000_000);
    assert_eq!(pi[0].fact_key(), first[1].fact_key());
    assert!(pi[0].same_content(&first[1]));
    // charge.refunded and charge.refund.updated (rendered with an API version whose refunds are refunds) state
    // the same refund.
    let a = facts("stripe/webhook-events/charge.refunded.json", 1_800_000_000);
    let mut updated = common::json("stripe/webhook-events/charge.refund.updated.json");
    updated["api_version"] = "2025-03-31.basil".into();
    let b =
        match &normalize(Psp::Stripe, &serde_json::to_vec(&updated).unwrap(), at(1_800_000_000), &Endpoint::default())
            .unwrap()[0]
        {
            Outcome::Events(e) => e.clone(),
            other => panic!("{other:?}"),
        };
    assert_eq!(a[0].fact_key(), b[0].fact_key());
    // The authorization and the capture of one charge are distinct facts.
    assert_ne!(first[0].fact_key(), first[1].fact_key());
}

#[test]
fn bad_bodies_are_clear_errors() {
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let code = |psp, body: &[u8]| normalize(psp, body, at, &Endpoint::default()).unwrap_err().code();
    assert_eq!(code(Psp::Stripe, b"{not json"), "malformed_json");
    assert_eq!(code(Psp::Adyen, b"[1,2"), "malformed_json");
    assert_eq!(code(Psp::Stripe, br#"{"id":"evt_1","type":"charge.succeeded"}"#), "schema_violation");
    // An event type Stripe added after Tally's list is no error: acknowledged, kept and counted as unknown.
    let unknown = br#"{"id":"evt_1","type":"charge.teleported","created":1,"livemode":false,"data":{"object":{}}}"#;
    assert_eq!(
        normalize(Psp::Stripe, unknown, at, &Endpoint::default()).unwrap(),
        vec![Outcome::Unknown { event_type: "charge.teleported".into() }]
    );
    assert_eq!(
        code(
            Psp::Stripe,
            br#"{"id":"evt_1","type":"charge.captured","created":1,"livemode":false,"data":{"object":{"id":"ch_1"}}}"#
        ),
        "schema_violation"
    );
    assert_eq!(code(Psp::Adyen, br#"{"notificationItems":[]}"#), "schema_violation");
    assert_eq!(code(Psp::Adyen, br#"{"hello":"world"}"#), "schema_violation");
    // A card number anywhere, even in a field Tally does not read, rejects the whole body.
    let mut with_pan = common::read("stripe/webhook-events/charge.succeeded.json");
    let text = String::from_utf8(with_pan.clone())
        .unwrap()
        .replace("\"(created by Stripe CLI)\"", "\"card 4242 4242 4242 4242\"");
    with_pan = text.into_bytes();
    let err = normalize(Psp::Stripe, &with_pan, at, &Endpoint::default()).unwrap_err();
    assert_eq!(err.code(), "pan_detected");
    assert!(!err.to_string().contains("4242"), "{err}");
}

#[test]
fn adyen_amounts_use_adyens_exponent() {
    let body = |currency: &str, value: i64| {
        format!(
            r#"{{"live":"false","notificationItems":[{{"NotificationRequestItem":{{"amount":{{"currency":"{currency}","value":{value}}},
            "eventCode":"AUTHORISATION","eventDate":"2024-01-01T00:00:00+00:00","merchantAccountCode":"M","pspReference":"P1","success":"true"}}}}]}}"#
        )
    };
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let minor =
        |currency, value| match &normalize(Psp::Adyen, body(currency, value).as_bytes(), at, &Endpoint::default())
            .unwrap()[0]
        {
            Outcome::Events(e) => e[0].money.amount.minor(),
            other => panic!("{other:?}"),
        };
    assert_eq!(minor("CLP", 100_000), 1_000); // Adyen CLP has 2 decimals, ISO 0
    assert_eq!(minor("CVE", 1_500), 150_000); // Adyen CVE has 0 decimals, ISO 2
    assert_eq!(minor("IDR", 15_000), 1_500_000); // Adyen IDR has 0 decimals, ISO 2
    assert_eq!(minor("ISK", 150_000), 1_500); // Adyen ISK has 2 decimals, ISO 0
    assert_eq!(minor("EUR", 1_050), 1_050);
    let err = normalize(Psp::Adyen, body("CLP", 100_050).as_bytes(), at, &Endpoint::default()).unwrap_err();
    assert_eq!(err.code(), "invalid_amount", "{err}");
}

#[test]
fn compiled_event_type_lists_equal_the_fixtures() {
    assert_eq!(tally_psp::stripe::EVENT_TYPES.as_bytes(), common::read("stripe/event_types_stripe_python_16.1.0.txt"));
    assert_eq!(tally_psp::adyen::EVENT_CODES.as_bytes(), common::read("adyen/event_codes_adyen_node_32.1.0.txt"));
}

#[test]
fn stripe_isk_is_rescaled_from_stripes_two_decimals() {
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let body = |amount: i64| {
        let text = String::from_utf8(common::read("stripe/webhook-events/charge.captured.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"]["object"]["currency"] = "isk".into();
        v["data"]["object"]["amount"] = amount.into();
        v["data"]["object"]["amount_captured"] = amount.into();
        serde_json::to_vec(&v).unwrap()
    };
    match &normalize(Psp::Stripe, &body(4000), at, &Endpoint::default()).unwrap()[0] {
        Outcome::Events(e) => assert_eq!((e[0].money.amount.minor(), e[0].money.currency.code()), (40, "ISK")),
        other => panic!("{other:?}"),
    }
    // Fractional króna cannot be booked in ISO minor units: an error, never a rounding.
    assert_eq!(normalize(Psp::Stripe, &body(4050), at, &Endpoint::default()).unwrap_err().code(), "invalid_amount");
}

#[test]
fn error_messages_never_quote_a_card_number() {
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let pan = "4242424242424242";
    // Called below the PAN scan on purpose: the messages themselves must be clean.
    let wrong_type = format!(
        r#"{{"id":"evt_1","type":"charge.captured","created":1,"livemode":false,"data":{{"object":{{"id":"ch_1","amount":"{pan}","currency":"usd"}}}}}}"#
    );
    let err = tally_psp::stripe::normalize(wrong_type.as_bytes(), at, &Endpoint::default()).unwrap_err();
    assert!(!err.to_string().contains(pan), "{err}");
    assert!(err.to_string().contains("4242"), "the last four stay, for debugging: {err}");
    let unknown_type =
        format!(r#"{{"id":"evt_1","type":"{pan}","created":1,"livemode":false,"data":{{"object":{{}}}}}}"#);
    match tally_psp::stripe::normalize(unknown_type.as_bytes(), at, &Endpoint::default()).unwrap() {
        Outcome::Unknown { event_type } => {
            assert!(!event_type.contains(pan) && event_type.contains("4242"), "{event_type}")
        }
        other => panic!("{other:?}"),
    }
    let adyen = format!(r#"{{"notificationItems":[{{"NotificationRequestItem":{{"eventCode":{pan}}}}}]}}"#);
    let err = tally_psp::adyen::normalize(adyen.as_bytes(), at, &Endpoint::default()).unwrap_err();
    assert!(!err.to_string().contains(pan), "{err}");
    let key = tally_psp::adyen::HmacKey::from_hex("00FF").unwrap();
    let err = tally_psp::adyen::verify_notification(adyen.as_bytes(), &[key]).unwrap_err();
    assert!(!err.to_string().contains(pan), "{err}");
}

#[test]
fn an_empty_adyen_batch_is_not_valid() {
    let key = tally_psp::adyen::HmacKey::from_hex("00FF").unwrap();
    let err = tally_psp::adyen::verify_notification(br#"{"live":"false","notificationItems":[]}"#, &[key]).unwrap_err();
    assert_eq!(err.code(), "malformed_body");
}

#[test]
fn card_numbers_hidden_behind_json_escapes_are_found() {
    let at = Timestamp::from_unix_secs(1_800_000_000).unwrap();
    let text = String::from_utf8(common::read("stripe/webhook-events/charge.succeeded.json")).unwrap();
    // "4242424242424242", every digit written as a JSON \u escape: invisible to a byte scan.
    let escaped: String = "4242424242424242".chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let body = text.replace("\"(created by Stripe CLI)\"", &format!("\"{escaped}\""));
    assert!(tally_domain::pan::scan(body.as_bytes()).is_empty(), "the byte scan alone misses it");
    assert_eq!(normalize(Psp::Stripe, body.as_bytes(), at, &Endpoint::default()).unwrap_err().code(), "pan_detected");
    let redacted = tally_psp::redact_pans(body.as_bytes());
    assert!(tally_psp::scan_for_pans(&redacted).is_empty());
    assert!(String::from_utf8_lossy(&redacted).contains("withheld"));
}
