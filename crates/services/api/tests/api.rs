//! The payments API over HTTP against the stack's PostgreSQL and the PSP simulator's Stripe on loopback
//! (`tally_sim::psp::stripe`: a test peer speaking the PaymentIntents subset, honouring idempotency keys, counting
//! charges per key and per payment).

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{json, Value};
use tally_api::config::{AdyenApi, ApiConfig, EncryptionKey, StripeApi};
use tally_api::connector::RetryConfig;
use tally_api::merchants::{self, Merchant};
use tally_domain::{Psp, Secret};
use tally_sim::psp::stripe::{Faults, Sim};
use tokio_util::sync::CancellationToken;

async fn fake_stripe() -> (String, Sim) {
    let sim = Sim::new(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sim.clone().serve(listener));
    (format!("http://{addr}"), sim)
}

struct Env {
    base: String,
    pool: deadpool_postgres::Pool,
    sim: Sim,
    adyen: tally_sim::psp::adyen::Sim,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn env() -> Env {
    let (pg, pool) = tally_testkit::database("api_http").await;
    let (stripe_url, sim) = fake_stripe().await;
    let adyen = tally_sim::psp::adyen::Sim::new("adyen_test_key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let adyen_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(adyen.clone().serve(listener));
    let config = ApiConfig {
        encryption_keys: vec![EncryptionKey { id: "k1".into(), key: tally_api::vault::Vault::generate_key() }],
        encryption_active: "k1".into(),
        resolver_interval_ms: 100,
        resolver_min_age_ms: 1_000,
        idempotency_lease_secs: 5,
        retry: RetryConfig { attempts: 2, base_ms: 10, cap_ms: 50, timeout_ms: 400 },
        breaker: tally_api::connector::BreakerConfig { failures_to_open: 2, open_for_ms: 1_500, half_open_probes: 1 },
        stripe: Some(StripeApi { base_url: stripe_url, secret_key: Secret::new("sk_test_fake".into()) }),
        adyen: Some(AdyenApi {
            base_url: adyen_url,
            api_key: Secret::new("adyen_test_key".into()),
            return_url: "https://shop.example/return".into(),
        }),
        ..ApiConfig::default()
    };
    let api = tally_api::build(config, pg).await.expect("the API builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(tally_api::serve(api, listener, stop.clone()));
    Env { base, pool, sim, adyen, http: reqwest::Client::new(), _stop: stop.drop_guard() }
}

impl Env {
    async fn merchant(&self, id: &str) -> String {
        self.merchant_routed(id, vec![Psp::Stripe], false).await
    }

    async fn merchant_routed(&self, id: &str, psps: Vec<Psp>, failover: bool) -> String {
        let c = self.pool.get().await.expect("conn");
        let m = Merchant {
            merchant_id: id.into(),
            psps,
            failover,
            stripe_account: None,
            adyen_merchant_account: Some("TallyTestECOM".into()),
            rate_per_second: 1_000,
        };
        merchants::create(&c, &m).await.expect("merchant");
        merchants::create_key(&c, id).await.expect("key").expose().clone()
    }

    async fn post(&self, api_key: &str, path: &str, idem: Option<&str>, body: &str) -> (u16, HeaderMap, Vec<u8>) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(api_key)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.expect("the API answers");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        (status, headers, resp.bytes().await.expect("body").to_vec())
    }

    async fn get(&self, api_key: &str, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(api_key).send().await.expect("answers");
        (resp.status().as_u16(), resp.json().await.expect("json"))
    }

    async fn count(&self, sql: &str) -> i64 {
        self.pool.get().await.expect("conn").query_one(sql, &[]).await.expect("count").get(0)
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

const CREATE: &str = r#"{"amount": 1000, "currency": "EUR", "merchant_reference": "order-1",
    "payment_method": "pm_card_visa", "capture_method": "manual"}"#;

#[tokio::test]
async fn a_key_makes_one_payment_replays_its_response_and_refuses_every_misuse() {
    let env = env().await;
    let a = env.merchant("m_http_a").await;
    let b = env.merchant("m_http_b").await;

    let (status, _, first) = env.post(&a, "/v1/payments", Some("order-1-try"), CREATE).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&first));
    let p = json_of(&first);
    assert_eq!((p["status"].as_str(), p["amount_authorized"].as_i64()), (Some("authorized"), Some(1000)));
    let id = p["id"].as_str().expect("id").to_owned();

    // The same key and request (spaced differently): the stored response, byte for byte, marked replayed.
    let respaced = CREATE.replace(": ", ":");
    let (status, headers, again) = env.post(&a, "/v1/payments", Some("order-1-try"), &respaced).await;
    assert_eq!((status, again.as_slice()), (201, first.as_slice()));
    assert_eq!(headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    // Another request with the key; no key at all: refused, nothing charged.
    let (status, _, body) = env.post(&a, "/v1/payments", Some("order-1-try"), &CREATE.replace("1000", "999")).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
    let (status, _, body) = env.post(&a, "/v1/payments", None, CREATE).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (400, Some("idempotency_key_missing")));
    assert_eq!(env.sim.books().charges.values().sum::<u32>(), 1, "one charge at the PSP");

    // A card number anywhere: 422, and nothing of the request is kept.
    let before = env.count("SELECT count(*) FROM api_payments").await;
    let with_pan = CREATE.replace("order-1", "4242 4242 4242 4242");
    let (status, _, body) = env.post(&a, "/v1/payments", Some("pan-1"), &with_pan).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (422, Some("card_number_in_request")));
    assert!(!String::from_utf8_lossy(&body).contains("4242"));
    assert_eq!(env.count("SELECT count(*) FROM api_payments").await, before);
    assert_eq!(env.count("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = 'pan-1'").await, 0);

    // Merchant isolation: B cannot see or act on A's payment.
    assert_eq!(env.get(&b, &format!("/v1/payments/{id}")).await.0, 404);
    let (status, _, _) = env.post(&b, &format!("/v1/payments/{id}/capture"), Some("b-cap"), r#"{"amount": 100}"#).await;
    assert_eq!(status, 404);
    assert_eq!(env.get(&a, &format!("/v1/payments/{id}")).await.1["status"], "authorized");

    // Partial capture, then two partial refunds, then one too many.
    let (status, _, body) =
        env.post(&a, &format!("/v1/payments/{id}/capture"), Some("cap-1"), r#"{"amount": 600}"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (json_of(&body)["status"].as_str(), json_of(&body)["amount_captured"].as_i64()),
        (Some("captured"), Some(600))
    );
    // Stripe releases what a capture leaves: a second capture is refused before anything is sent.
    let (status, _, body) =
        env.post(&a, &format!("/v1/payments/{id}/capture"), Some("cap-2"), r#"{"amount": 100}"#).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (409, Some("payment_state")));
    for (k, amount, total) in [("re-1", 200, 200), ("re-2", 400, 600)] {
        let (status, _, body) =
            env.post(&a, &format!("/v1/payments/{id}/refunds"), Some(k), &format!(r#"{{"amount": {amount}}}"#)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(json_of(&body)["amount_refunded"].as_i64(), Some(total));
    }
    let (status, _, body) = env.post(&a, &format!("/v1/payments/{id}/refunds"), Some("re-3"), r#"{"amount": 1}"#).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (409, Some("amount_too_large")));

    // The outbox: a state row per version, and the facts keyed as Stripe's webhooks key them.
    let versions = env.get(&a, &format!("/v1/payments/{id}")).await.1["version"].as_i64().expect("version");
    let pid = tally_api::model::parse_public_id(&id).expect("uuid");
    let c = env.pool.get().await.expect("conn");
    let states: i64 = c
        .query_one("SELECT count(*) FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NULL", &[&pid])
        .await
        .expect("count")
        .get(0);
    assert_eq!(states, versions);
    let topics: Vec<String> = c
        .query(
            "SELECT topic FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NOT NULL ORDER BY outbox_id",
            &[&pid],
        )
        .await
        .expect("facts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        topics,
        ["payments.authorization.v1", "payments.capture.v1", "payments.refund.v1", "payments.refund.v1"]
    );
    let pi = p["psp_reference"].as_str().expect("the PaymentIntent");
    let charge = env.sim.intent(pi).expect("the intent")["latest_charge"].as_str().expect("its charge").to_owned();
    let captured = tally_domain::FactIdentity {
        psp: Psp::Stripe,
        kind: tally_domain::EventKind::Captured,
        psp_reference: &charge,
        original_reference: None,
    }
    .key();
    let n: i64 = c
        .query_one("SELECT count(*) FROM api_payment_outbox WHERE fact_key = $1", &[&captured.0])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "the capture's fact key is the webhook's (its charge, captured)");
}

#[tokio::test]
async fn a_timeout_after_the_charge_leaves_the_payment_pending_until_the_resolver_settles_it_with_no_second_charge() {
    let env = env().await;
    let a = env.merchant("m_http_timeout").await;
    env.sim.set_faults(Faults { hang_after_charge: 1, hang_ms: 3_000, hang_window_ms: 1_500, ..Faults::default() });
    let (status, _, first) = env.post(&a, "/v1/payments", Some("t-1"), CREATE).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&first));
    let p = json_of(&first);
    assert_eq!(p["status"], "pending", "no answer is never failed");
    let id = p["id"].as_str().expect("id").to_owned();

    // The resolver sends the same request again under the same key: the PSP replays its answer.
    let mut status_now = String::new();
    for _ in 0..100 {
        status_now = env.get(&a, &format!("/v1/payments/{id}")).await.1["status"].as_str().unwrap_or("").to_owned();
        if status_now != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_now, "authorized");
    let books = env.sim.books();
    assert_eq!(books.charges.len(), 1, "one idempotency key for the attempt, on every try: {:?}", books.charges);
    assert_eq!(books.charges.values().sum::<u32>(), 1, "charged once");
    assert_eq!(books.charged_payments.values().copied().collect::<Vec<_>>(), [1], "the payment charged once");
}

#[tokio::test]
async fn of_two_concurrent_captures_one_wins_and_the_other_is_told_the_payment_is_busy() {
    let env = env().await;
    let a = env.merchant("m_http_race").await;
    let (status, _, body) = env.post(&a, "/v1/payments", Some("r-1"), CREATE).await;
    assert_eq!(status, 201);
    let id = json_of(&body)["id"].as_str().expect("id").to_owned();
    env.sim.set_faults(Faults { latency_ms: 300, ..Faults::default() });
    let path = format!("/v1/payments/{id}/capture");
    let (x, y) = tokio::join!(
        env.post(&a, &path, Some("cap-x"), r#"{"amount": 1000}"#),
        env.post(&a, &path, Some("cap-y"), r#"{"amount": 1000}"#),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", String::from_utf8_lossy(&x.2), String::from_utf8_lossy(&y.2));
    let loser = if x.0 == 409 { &x.2 } else { &y.2 };
    assert_eq!(json_of(loser)["error"]["code"], "payment_busy");
    let p = env.get(&a, &format!("/v1/payments/{id}")).await.1;
    assert_eq!((p["status"].as_str(), p["amount_captured"].as_i64()), (Some("captured"), Some(1000)));
}

#[tokio::test]
async fn the_same_key_twice_at_once_runs_once_and_the_second_is_told_it_is_in_use() {
    let env = env().await;
    let a = env.merchant("m_http_inflight").await;
    env.sim.set_faults(Faults { latency_ms: 250, ..Faults::default() });
    let (x, y) = tokio::join!(
        env.post(&a, "/v1/payments", Some("same"), CREATE),
        env.post(&a, "/v1/payments", Some("same"), CREATE),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
    let loser = if x.0 == 409 { &x.2 } else { &y.2 };
    assert_eq!(json_of(loser)["error"]["code"], "idempotency_key_in_use");
    assert_eq!(env.sim.books().charges.values().sum::<u32>(), 1);
}

#[tokio::test]
async fn while_the_breaker_is_open_new_payments_are_refused_and_pending_ones_stay_pending_never_failed() {
    let env = env().await;
    let a = env.merchant("m_http_outage").await;
    env.sim.set_faults(Faults { outage: true, ..Faults::default() });
    // Two 503s (the attempts of one call): no answer, the breaker opens.
    let (status, _, body) = env.post(&a, "/v1/payments", Some("o-1"), CREATE).await;
    assert_eq!((status, json_of(&body)["status"].as_str()), (202, Some("pending")));
    let id = json_of(&body)["id"].as_str().expect("id").to_owned();
    // A new payment while it is open (no other PSP for this merchant): 503, nothing made, the key free again.
    let (status, _, body) = env.post(&a, "/v1/payments", Some("o-2"), CREATE).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (503, Some("psp_unavailable")));
    assert_eq!(env.count("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = 'o-2'").await, 0);
    // The resolver's resends are kept back by the open breaker: the payment stays pending, it is never failed.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let metrics =
        env.http.get(format!("{}/metrics", env.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tally_api_breaker_state{psp=\"stripe\"} 2"), "{metrics}");
    assert_eq!(env.get(&a, &format!("/v1/payments/{id}")).await.1["status"], "pending");
    // The PSP is back: the half-open probe is the resolver's resend, which resolves the payment; one charge.
    env.sim.set_faults(Faults::default());
    let mut status_now = String::new();
    for _ in 0..100 {
        status_now = env.get(&a, &format!("/v1/payments/{id}")).await.1["status"].as_str().unwrap_or("").to_owned();
        if status_now != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_now, "authorized");
    assert_eq!(env.sim.books().charges.values().sum::<u32>(), 1);
}

#[tokio::test]
async fn the_facts_the_api_learns_have_the_same_key_and_content_as_the_webhook_stating_them() {
    let env = env().await;
    let a = env.merchant("m_http_facts").await;
    let (status, _, body) = env.post(&a, "/v1/payments", Some("f-1"), CREATE).await;
    assert_eq!(status, 201);
    let id = tally_api::model::parse_public_id(json_of(&body)["id"].as_str().expect("id")).expect("uuid");
    // The webhook Stripe sends for this authorization, rendered from the fake's own intent.
    let pi = json_of(&body)["psp_reference"].as_str().expect("the PaymentIntent").to_owned();
    let intent = env.sim.intent(&pi).expect("the simulator's intent");
    let event = json!({"id": "evt_1", "object": "event", "type": "payment_intent.amount_capturable_updated",
        "api_version": "2025-03-31.basil", "created": 1_764_000_000, "livemode": false, "data": {"object": intent}});
    let endpoint = tally_psp::Endpoint { live: false, adyen_capture: Default::default() };
    let now = tally_domain::Timestamp::from_unix_secs(1_764_000_001).expect("ts");
    let tally_psp::Outcome::Events(webhook) =
        tally_psp::stripe::normalize(&serde_json::to_vec(&event).expect("json"), now, &endpoint).expect("normalizes")
    else {
        panic!("the webhook states facts")
    };
    let c = env.pool.get().await.expect("conn");
    let rows = c
        .query("SELECT record_value FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NOT NULL", &[&id])
        .await
        .expect("facts");
    let api: Vec<_> = rows
        .iter()
        .map(|r| tally_contracts::decode_payment_event(&r.get::<_, Vec<u8>>(0)).expect("decodes").event)
        .collect();
    assert_eq!((api.len(), webhook.len()), (1, 1));
    assert_eq!(api[0].fact_key(), webhook[0].fact_key());
    assert!(api[0].same_content(&webhook[0]), "API {:?}\nwebhook {:?}", api[0], webhook[0]);
    assert_eq!(api[0].source, tally_domain::Source::Api);
}

const ADYEN: &str = r#"{"amount": 1000, "currency": "EUR", "merchant_reference": "order-a", "customer": "cus_42",
    "payment_method": "stored_card_1", "capture_method": "manual"}"#;

#[tokio::test]
async fn adyen_payments_need_their_shopper_state_the_webhooks_facts_and_answer_modifications_received() {
    let env = env().await;
    let a = env.merchant_routed("m_http_adyen", vec![Psp::Adyen], false).await;
    let (status, _, body) =
        env.post(&a, "/v1/payments", Some("ad-0"), &ADYEN.replace(r#""customer": "cus_42","#, "")).await;
    assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (422, Some("customer_required")));

    let (status, _, body) = env.post(&a, "/v1/payments", Some("ad-1"), ADYEN).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let p = json_of(&body);
    assert_eq!((p["psp"].as_str(), p["status"].as_str()), (Some("adyen"), Some("authorized")));
    let psp_ref = p["psp_reference"].as_str().expect("pspReference").to_owned();

    // The AUTHORISATION notification Adyen sends for it (the published fixture, with this payment's values).
    let mut n: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../../shared/fixtures/adyen/notifications/authorisation-true.json"
        ))
        .expect("the fixture"),
    )
    .expect("json");
    let item = &mut n["notificationItems"][0]["NotificationRequestItem"];
    item["merchantAccountCode"] = json!("TallyTestECOM");
    item["pspReference"] = json!(psp_ref);
    item["merchantReference"] = json!(p["id"]);
    item["amount"] = json!({"currency": "EUR", "value": 1000});
    let endpoint = tally_psp::Endpoint { live: false, adyen_capture: Default::default() };
    let now = tally_domain::Timestamp::from_unix_secs(1_764_000_001).expect("ts");
    let outcomes =
        tally_psp::adyen::normalize(&serde_json::to_vec(&n).expect("json"), now, &endpoint).expect("normalizes");
    let Some(tally_psp::Outcome::Events(webhook)) = outcomes.into_iter().next() else { panic!("facts") };
    let id = tally_api::model::parse_public_id(p["id"].as_str().expect("id")).expect("uuid");
    let c = env.pool.get().await.expect("conn");
    let rows = c
        .query("SELECT record_value FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NOT NULL", &[&id])
        .await
        .expect("facts");
    let api: Vec<_> = rows
        .iter()
        .map(|r| tally_contracts::decode_payment_event(&r.get::<_, Vec<u8>>(0)).expect("decodes").event)
        .collect();
    assert_eq!((api.len(), webhook.len()), (1, 1));
    assert!(api[0].same_content(&webhook[0]), "API {:?}\nwebhook {:?}", api[0], webhook[0]);

    // Captures and refunds are `received`: 202, the webhook confirms them (and books them).
    let (status, _, body) = env
        .post(&a, &format!("/v1/payments/{}/capture", p["id"].as_str().unwrap()), Some("ad-c"), r#"{"amount": 600}"#)
        .await;
    assert_eq!(
        (status, json_of(&body)["amount_captured"].as_i64()),
        (202, Some(600)),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = env
        .post(&a, &format!("/v1/payments/{}/capture", p["id"].as_str().unwrap()), Some("ad-c2"), r#"{"amount": 400}"#)
        .await;
    assert_eq!((status, json_of(&body)["amount_captured"].as_i64()), (202, Some(1000)), "Adyen captures in parts");
    let (status, _, body) = env
        .post(&a, &format!("/v1/payments/{}/refunds", p["id"].as_str().unwrap()), Some("ad-r"), r#"{"amount": 300}"#)
        .await;
    assert_eq!((status, json_of(&body)["amount_refunded"].as_i64()), (202, Some(300)));
    let facts: i64 = c
        .query_one("SELECT count(*) FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NOT NULL", &[&id])
        .await
        .expect("count")
        .get(0);
    assert_eq!(facts, 1, "received modifications state no fact: their webhooks do");

    // A refusal is a failed payment with Adyen's reason, not an error.
    let (status, _, body) =
        env.post(&a, "/v1/payments", Some("ad-2"), &ADYEN.replace("stored_card_1", "declined")).await;
    let p = json_of(&body);
    assert_eq!((status, p["status"].as_str(), p["failure"]["code"].as_str()), (201, Some("failed"), Some("2")));
    let books = env.adyen.books();
    assert!(books.authorised_payments.values().all(|n| *n == 1), "{books:?}");
}

#[tokio::test]
async fn while_stripe_is_out_new_payments_fail_over_to_adyen_and_the_pending_one_stays_with_stripe() {
    let env = env().await;
    let a = env.merchant_routed("m_http_failover", vec![Psp::Stripe, Psp::Adyen], true).await;
    env.sim.set_faults(Faults { outage: true, ..Faults::default() });
    let (status, _, body) = env.post(&a, "/v1/payments", Some("fo-1"), ADYEN).await;
    let first = json_of(&body);
    assert_eq!((status, first["psp"].as_str(), first["status"].as_str()), (202, Some("stripe"), Some("pending")));
    // Stripe's breaker is open now: the next payment goes to Adyen.
    let (status, _, body) = env.post(&a, "/v1/payments", Some("fo-2"), ADYEN).await;
    let second = json_of(&body);
    assert_eq!((status, second["psp"].as_str(), second["status"].as_str()), (201, Some("adyen"), Some("authorized")));
    let metrics =
        env.http.get(format!("{}/metrics", env.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tally_api_failovers_total 1"), "{metrics}");
    // The payment with an unresolved attempt never moves: it stays with Stripe until Stripe answers.
    let again = env.get(&a, &format!("/v1/payments/{}", first["id"].as_str().unwrap())).await.1;
    assert_eq!((again["psp"].as_str(), again["status"].as_str()), (Some("stripe"), Some("pending")));
}
