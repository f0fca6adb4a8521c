//! One ledger for both sources (issue 17 §5): the payments API, the outbox relay, the PSP simulator sending signed
//! webhooks to ingest, and the ledger sink, all on the stack's PostgreSQL, Redis and broker. Whether the webhook or
//! the API's answer reaches the ledger first, each fact is booked once, with the same content.

use std::time::Duration;

use tally_api::config::{ApiConfig, EncryptionKey, StripeApi};
use tally_api::merchants::{self, Merchant};
use tally_domain::{Psp, Secret};
use tally_ingest::{Ingest, IngestConfig};
use tally_kafka::{KafkaConfig, API_TOPICS, TOPICS};
use tally_ledger::LedgerConfig;
use tally_postgres::PostgresConfig;
use tally_redis::RedisConfig;
use tally_relay::{Relay, RelayConfig};
use tally_sim::psp::stripe::{Faults, Sim, Webhooks};
use tally_testkit::{env, unique};
use tokio_util::sync::CancellationToken;

const WHSEC: &str = "whsec_payments_e2e";

struct Stack {
    pool: deadpool_postgres::Pool,
    api: String,
    key: String,
    sim: Sim,
    relay: std::sync::Arc<Relay>,
    /// The ledger sink and ingest: a test that waits on them says so when one of them stopped.
    services: Vec<(&'static str, tokio::task::JoinHandle<String>)>,
    stop: CancellationToken,
    _guard: tokio_util::sync::DropGuard,
}

async fn stack() -> Stack {
    let (postgres, pool) = tally_testkit::database("tally_pay_").await;
    let kafka =
        KafkaConfig { brokers: env("TALLY__KAFKA__BROKERS"), topic_prefix: unique("pay") + ".", ..Default::default() };
    tally_kafka::ensure_topics(&kafka, TOPICS).await.expect("topics");
    tally_kafka::ensure_topics(&kafka, API_TOPICS).await.expect("topics");
    let stop = CancellationToken::new();

    let mut ingest = IngestConfig::default();
    ingest.stripe.secrets = vec![Secret::new(WHSEC.into())];
    let redis = RedisConfig { url: env("TALLY__REDIS__URL"), ..RedisConfig::default() };
    let ingest = Ingest::new(ingest, kafka.clone(), postgres.clone(), redis).await.expect("ingest");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ingest_url = format!("http://{}/webhooks/stripe", listener.local_addr().expect("addr"));
    let ingest = tokio::spawn({
        let stop = stop.clone();
        async move { format!("{:?}", ingest.serve(listener, stop).await) }
    });

    let ledger = LedgerConfig {
        group_id: unique("gpay"),
        batch_max_records: 200,
        batch_max_wait_ms: 50,
        session_timeout_ms: 6000,
        max_poll_interval_ms: 8000,
    };
    let ledger = tokio::spawn({
        let (kafka, postgres, stop) = (kafka.clone(), postgres.clone(), stop.clone());
        async move { format!("{:?}", tally_ledger::run(ledger, kafka, postgres, stop).await) }
    });

    let sim = Sim::new(Some(Webhooks { url: ingest_url, secret: Secret::new(WHSEC.into()), delay_ms: 0 }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stripe = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sim.clone().serve(listener));

    let config = ApiConfig {
        encryption_keys: vec![EncryptionKey { id: "k1".into(), key: tally_api::vault::Vault::generate_key() }],
        stripe: Some(StripeApi { base_url: stripe, secret_key: Secret::new("sk_test_e2e".into()) }),
        ..ApiConfig::default()
    };
    let api = tally_api::build(config, PostgresConfig { ..postgres.clone() }).await.expect("api");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(tally_api::serve(api, listener, stop.clone()));

    let relay_config = RelayConfig { slot: unique("tally_pay_slot_"), ..RelayConfig::default() };
    tally_relay::ensure(&pool, &relay_config).await.expect("slot");
    let relay = std::sync::Arc::new(Relay {
        producer: tally_kafka::Producer::new(&kafka).expect("producer"),
        config: relay_config,
        kafka,
        pool: pool.clone(),
        metrics: Default::default(),
    });

    let c = pool.get().await.expect("conn");
    let m = Merchant {
        merchant_id: "m_e2e".into(),
        psps: vec![Psp::Stripe],
        failover: false,
        stripe_account: None,
        adyen_merchant_account: None,
        rate_per_second: 100,
    };
    merchants::create(&c, &m).await.expect("merchant");
    let key = merchants::create_key(&c, "m_e2e").await.expect("key").expose().clone();
    let services = vec![("ingest", ingest), ("ledger sink", ledger)];
    Stack { pool, api: api_url, key, sim, relay, services, stop: stop.clone(), _guard: stop.drop_guard() }
}

impl Stack {
    async fn post(&self, path: &str, idem: &str, body: &str) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.api))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", idem)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the API answers");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// The charge of an API payment (the ledger's payment id is `stripe:<charge>`).
    fn charge(&self, payment: &serde_json::Value) -> String {
        let pi = payment["psp_reference"].as_str().expect("a PaymentIntent");
        self.sim.intent(pi).expect("the intent")["latest_charge"].as_str().expect("a charge").to_owned()
    }

    /// (facts booked, of them from the API; duplicates seen, of them conflicting) for the charge's payment.
    async fn booked(&self, charge: &str) -> (i64, i64, i64, i64) {
        let c = self.pool.get().await.expect("conn");
        let payment = format!("stripe:{charge}");
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM event_log WHERE payment_id = $1),
                        (SELECT count(*) FROM event_log WHERE payment_id = $1 AND source = 'api'),
                        (SELECT count(*) FROM sink_duplicates d JOIN event_log e USING (fact_key) WHERE e.payment_id = $1),
                        (SELECT count(*) FROM sink_duplicates d JOIN event_log e USING (fact_key)
                          WHERE e.payment_id = $1 AND d.conflict)",
                &[&payment],
            )
            .await
            .expect("counts");
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    async fn until(
        &self,
        charge: &str,
        what: &str,
        done: impl Fn((i64, i64, i64, i64)) -> bool,
    ) -> (i64, i64, i64, i64) {
        let mut last = (0, 0, 0, 0);
        // Generous: the broker's group join and a fresh topic's first produce are slow on a loaded machine.
        for _ in 0..900 {
            last = self.booked(charge).await;
            if done(last) {
                return last;
            }
            if let Some((name, _)) = self.services.iter().find(|(_, task)| task.is_finished()) {
                panic!("{charge}: the {name} stopped while waiting for {what} ({last:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{charge}: {what} never happened in 90 s: {last:?}; the simulator: {:?}", self.sim.books());
    }
}

const CREATE: &str = r#"{"amount": 2500, "currency": "EUR", "merchant_reference": "order-e2e",
    "payment_method": "pm_card_visa", "capture_method": "manual"}"#;

#[tokio::test]
async fn webhook_first_and_api_first_each_book_every_fact_once_with_the_same_content() {
    let s = stack().await;

    // Webhook first: the relay is not running yet, so the webhook's facts reach the ledger alone.
    let w = s.post("/v1/payments", "w-create", CREATE).await;
    assert_eq!(w["status"], "authorized");
    let w_charge = s.charge(&w);
    let w_id = w["id"].as_str().expect("id").to_owned();
    s.post(&format!("/v1/payments/{w_id}/capture"), "w-capture", r#"{"amount": 2500}"#).await;
    s.until(&w_charge, "the webhooks' authorization and capture booked", |(n, api, _, _)| n == 2 && api == 0).await;

    // API first: the relay runs, the PSP's webhooks come late.
    let relay = {
        let (r, stop) = (s.relay.clone(), s.stop.clone());
        tokio::spawn(async move { r.run(stop).await })
    };
    s.sim.set_faults(Faults { webhook_delay_ms: 4_000, ..Faults::default() });
    let a = s.post("/v1/payments", "a-create", CREATE).await;
    let a_charge = s.charge(&a);
    let a_id = a["id"].as_str().expect("id").to_owned();
    s.post(&format!("/v1/payments/{a_id}/capture"), "a-capture", r#"{"amount": 2500}"#).await;
    s.until(&a_charge, "the API's facts booked before the webhooks", |(n, api, _, _)| n == 2 && api == 2).await;

    // Then the other source of each arrives: a duplicate of the same content, never a second booking.
    let w_done = s.until(&w_charge, "the API's facts seen as duplicates", |(_, _, dup, _)| dup >= 2).await;
    let a_done = s.until(&a_charge, "the webhooks seen as duplicates", |(_, _, dup, _)| dup >= 2).await;
    assert_eq!(w_done, (2, 0, 2, 0), "webhook first: two facts booked from the webhooks, the API's two duplicates");
    assert_eq!(a_done, (2, 2, 2, 0), "API first: two facts booked from the API, the webhooks' two duplicates");

    // The books: each payment's capture moved 2500 once (Σ per payment = what the PSP captured).
    let c = s.pool.get().await.expect("conn");
    for charge in [&w_charge, &a_charge] {
        let journals: i64 = c
            .query_one(
                "SELECT count(*) FROM journals j JOIN event_log e USING (fact_key) WHERE e.payment_id = $1",
                &[&format!("stripe:{charge}")],
            )
            .await
            .expect("journals")
            .get(0);
        assert_eq!(journals, 1, "{charge}: one journal (the capture; an authorization moves no money)");
        let exceptions: i64 = c
            .query_one(
                "SELECT count(*) FROM dq_exceptions WHERE payment_id = $1 AND kind = 'content_conflict'",
                &[&format!("stripe:{charge}")],
            )
            .await
            .expect("exceptions")
            .get(0);
        assert_eq!(exceptions, 0, "{charge}: the two sources state the same content");
    }
    let books = s.sim.books();
    assert!(books.charged_payments.values().all(|n| *n == 1) && books.charged_payments.len() == 2, "{books:?}");
    s.stop.cancel();
    let _ = relay.await;
    let slot = s.relay.config.slot.clone();
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("slot dropped");
}
