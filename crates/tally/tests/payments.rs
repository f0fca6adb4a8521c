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
    kafka: KafkaConfig,
    /// The relay in this process ([`Mode::InProcess`]).
    relay: Option<std::sync::Arc<Relay>>,
    /// The API's and the relay's configuration file ([`Mode::Processes`]).
    children: Option<Children>,
    /// The ledger sink and ingest: a test that waits on them says so when one of them stopped.
    services: Vec<(&'static str, tokio::task::JoinHandle<String>)>,
    stop: CancellationToken,
    _guard: tokio_util::sync::DropGuard,
}

/// Where the API and the relay run: tasks of the test, or `tally api` and `tally relay` child processes.
#[derive(PartialEq)]
enum Mode {
    InProcess,
    Processes,
}

struct Children {
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
    slot: String,
    /// Unique per test run: the prefix of its idempotency keys.
    run: String,
}

impl Drop for Children {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn stack(mode: Mode) -> Stack {
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

    let relay_config = RelayConfig { slot: unique("tally_pay_slot_"), ..RelayConfig::default() };
    let encryption_key = tally_api::vault::Vault::generate_key();
    let (api_url, relay, children) = if mode == Mode::InProcess {
        let config = ApiConfig {
            encryption_keys: vec![EncryptionKey { id: "k1".into(), key: encryption_key }],
            stripe: Some(StripeApi { base_url: stripe, secret_key: Secret::new("sk_test_e2e".into()) }),
            ..ApiConfig::default()
        };
        let api = tally_api::build(config, PostgresConfig { ..postgres.clone() }).await.expect("api");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api_url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(tally_api::serve(api, listener, stop.clone()));
        tally_relay::ensure(&pool, &relay_config).await.expect("slot");
        let relay = std::sync::Arc::new(Relay {
            producer: tally_kafka::Producer::new(&kafka).expect("producer"),
            config: relay_config,
            kafka: kafka.clone(),
            pool: pool.clone(),
            metrics: Default::default(),
        });
        (api_url, Some(relay), None)
    } else {
        // A port for the API that stays the same across its restarts.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(unique("tally_pay_"));
        std::fs::create_dir_all(&dir).expect("dir");
        // Short leases and resolver ages, so that a killed request's key is taken over within seconds
        // (validated: both exceed attempts × (timeout_ms + cap_ms) = 2.2 s).
        let toml = format!(
            r#"[postgres]
url = "{pg}"
[kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
[api]
listen = "127.0.0.1:{port}"
encryption_keys = [{{ id = "k1", key = "{key}" }}]
idempotency_lease_secs = 3
resolver_interval_ms = 200
resolver_min_age_ms = 2500
[api.retry]
attempts = 2
base_ms = 20
cap_ms = 100
timeout_ms = 1000
[api.stripe]
base_url = "{stripe}"
secret_key = "sk_test_crash"
[relay]
listen = "127.0.0.1:0"
slot = "{slot}"
idle_ms = 50
"#,
            pg = postgres.url,
            brokers = kafka.brokers,
            prefix = kafka.topic_prefix,
            key = encryption_key.expose(),
            slot = relay_config.slot,
        );
        let config = dir.join("tally.toml");
        std::fs::write(&config, toml).expect("config");
        // The slot before any payment: changes committed before it exists are never decoded.
        tally_relay::ensure(&pool, &relay_config).await.expect("slot");
        let children = Children { dir, config, slot: relay_config.slot.clone(), run: unique("crash") };
        (format!("http://127.0.0.1:{port}"), None, Some(children))
    };

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
    Stack {
        pool,
        api: api_url,
        key,
        sim,
        kafka,
        relay,
        children,
        services,
        stop: stop.clone(),
        _guard: stop.drop_guard(),
    }
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
    let s = stack(Mode::InProcess).await;
    let in_process = s.relay.clone().expect("in-process mode");

    // Webhook first: the relay is not running yet, so the webhook's facts reach the ledger alone.
    let w = s.post("/v1/payments", "w-create", CREATE).await;
    assert_eq!(w["status"], "authorized");
    let w_charge = s.charge(&w);
    let w_id = w["id"].as_str().expect("id").to_owned();
    s.post(&format!("/v1/payments/{w_id}/capture"), "w-capture", r#"{"amount": 2500}"#).await;
    s.until(&w_charge, "the webhooks' authorization and capture booked", |(n, api, _, _)| n == 2 && api == 0).await;

    // API first: the relay runs, the PSP's webhooks come late.
    let relay = {
        let (r, stop) = (in_process.clone(), s.stop.clone());
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
    let slot = in_process.config.slot.clone();
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("slot dropped");
}

/// `tally api` or `tally relay` as a child process on the test's configuration file (the stack's `TALLY__`
/// variables removed, so that the file is the whole configuration).
struct Child {
    args: &'static [&'static str],
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Child {
    fn new(args: &'static [&'static str], config: &std::path::Path, log: std::path::PathBuf) -> Child {
        let mut c = Child { args, config: config.to_owned(), log, child: None };
        c.start();
        c
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.arg("--config").arg(&self.config).args(self.args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TALLY__")) {
            cmd.env_remove(k);
        }
        cmd.env("TALLY_LOG", "warn").stdout(std::process::Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("tally starts"));
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("{:?} had already exited ({status}): {}", self.args, self.log_tail());
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// SIGTERM, and a clean exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        let status = child.wait().expect("reaped");
        assert!(status.success(), "{:?} after SIGTERM: {status}: {}", self.args, self.log_tail());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A merchant's client: the same request with the same key until the API gives a final answer — through refused
/// connections (the API is down), 409 (the key is held by a request the kill cut short), 5xx and time-outs.
async fn until_answered(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    idem: &str,
    body: &str,
    held: &AtomicU64,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        assert!(std::time::Instant::now() < deadline, "{url} ({idem}) never answered");
        let sent = http
            .post(url)
            .bearer_auth(key)
            .header("Idempotency-Key", idem)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return resp.json().await.expect("json"),
            Ok(resp) if resp.status().as_u16() == 409 => {
                let error: Value = resp.json().await.expect("json");
                match error["error"]["code"].as_str() {
                    // Only a request cut short by a kill leaves its key held: the client never sends a key twice
                    // at once.
                    Some("idempotency_key_in_use") => {
                        held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Some("payment_busy") => {}
                    _ => panic!("{url} ({idem}): 409 {error}"),
                }
            }
            Ok(resp) if resp.status().is_server_error() => {}
            Ok(resp) => panic!("{url} ({idem}): {} {}", resp.status(), resp.text().await.unwrap_or_default()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the payment until `want` (through restarts of the API); any other final status fails the test.
async fn until_status(http: &reqwest::Client, base: &str, key: &str, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        assert!(std::time::Instant::now() < deadline, "{id} never reached {want}");
        if let Ok(resp) = http.get(format!("{base}/v1/payments/{id}")).bearer_auth(key).send().await {
            if resp.status().is_success() {
                let p: Value = resp.json().await.expect("json");
                let status = p["status"].as_str().expect("status").to_owned();
                if status == want {
                    return p;
                }
                assert!(["pending", "authorized", "created"].contains(&status.as_str()), "{id}: {p}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use serde_json::Value;
use std::sync::atomic::AtomicU64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_api_and_of_the_relay_mid_flow_charges_nothing_twice_and_loses_nothing() {
    const PAYMENTS: usize = 40;
    let s = stack(Mode::Processes).await;
    let children = s.children.as_ref().expect("child-process mode");
    // Each PSP call takes a while, so that kills land in the middle of them.
    s.sim.set_faults(Faults { latency_ms: 150, ..Faults::default() });
    let mut api = Child::new(&["api"], &children.config, children.dir.join("api.log"));
    let mut relay = Child::new(&["relay"], &children.config, children.dir.join("relay.log"));

    let held = std::sync::Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(6));
    let mut flows = Vec::new();
    for i in 0..PAYMENTS {
        let (http, base, key, held, slots) = (http.clone(), s.api.clone(), s.key.clone(), held.clone(), slots.clone());
        let run = children.run.clone();
        flows.push(tokio::spawn(async move {
            let _slot = slots.acquire().await.expect("slot");
            let url = format!("{base}/v1/payments");
            let created = until_answered(&http, &url, &key, &format!("{run}-{i}-create"), CREATE, &held).await;
            let id = created["id"].as_str().expect("id").to_owned();
            until_status(&http, &base, &key, &id, "authorized").await;
            let capture = format!("{base}/v1/payments/{id}/capture");
            until_answered(&http, &capture, &key, &format!("{run}-{i}-capture"), r#"{"amount": 2500}"#, &held).await;
            until_status(&http, &base, &key, &id, "captured").await
        }));
    }

    // Kill -9 the API and the relay in turn while the flows run, each restarted shortly after.
    let (mut api_kills, mut relay_kills) = (0, 0);
    let mut turn = 0;
    while flows.iter().any(|f| !f.is_finished()) || api_kills < 4 || relay_kills < 4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        if turn % 2 == 0 {
            api.kill9();
            api_kills += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            api.start();
        } else {
            relay.kill9();
            relay_kills += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            relay.start();
        }
        turn += 1;
        assert!(turn < 400, "the flows did not finish");
    }
    let mut finals = Vec::new();
    for f in flows {
        finals.push(f.await.expect("a flow"));
    }
    let held = held.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{PAYMENTS} payments through {api_kills} kills of the API and {relay_kills} of the relay; {held} answers 409 (a key held by a killed request)");
    assert!(held > 0, "no kill cut a request short (no key was found held): the test proved nothing");

    // The simulator's books: every payment charged once, under one key, and captured in full.
    let books = s.sim.books();
    assert_eq!(books.charged_payments.len(), PAYMENTS, "{books:?}");
    assert!(books.charged_payments.values().all(|n| *n == 1), "a payment charged twice: {books:?}");
    assert!(books.charges.values().all(|n| *n == 1), "a key charged twice: {books:?}");
    let mut charges = Vec::new();
    for p in &finals {
        let pi = p["psp_reference"].as_str().expect("a PaymentIntent");
        let intent = s.sim.intent(pi).expect("the intent");
        assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(2500)));
        assert_eq!(p["amount_captured"], 2500, "{p}");
        charges.push(intent["latest_charge"].as_str().expect("charge").to_owned());
    }

    // The ledger: each payment's authorization and capture booked once, whichever source came first.
    for charge in &charges {
        let booked = s.until(charge, "the payment's two facts booked", |(n, _, _, _)| n >= 2).await;
        assert_eq!((booked.0, booked.3), (2, 0), "{charge}: two facts, no conflicting duplicate");
    }

    // The relay: every version of every payment on Kafka, in order, after four kills.
    let c = s.pool.get().await.expect("conn");
    let want: std::collections::BTreeMap<String, i64> = c
        .query("SELECT payment_id, version FROM api_payments", &[])
        .await
        .expect("payments")
        .iter()
        .map(|r| (tally_api::model::public_id(r.get(0)), i64::from(r.get::<_, i32>(1))))
        .collect();
    assert_eq!(want.len(), PAYMENTS);
    let topic = format!("{}{}", s.kafka.topic_prefix, API_TOPICS[0].name);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = state_versions(&s.kafka.brokers, &topic);
        if want.iter().all(|(id, v)| seen.get(id).is_some_and(|vs| vs.contains(v))) {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "the relay never caught up: {seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (id, last) in &want {
        let mut first = std::collections::BTreeSet::new();
        let order: Vec<i64> = seen[id].iter().copied().filter(|v| first.insert(*v)).collect();
        assert_eq!(order, (1..=*last).collect::<Vec<_>>(), "{id}: versions lost or out of order: {:?}", seen[id]);
    }
    api.stop();
    relay.stop();
    c.execute("SELECT pg_drop_replication_slot($1)", &[&children.slot]).await.expect("slot dropped");
}

/// Per payment, the versions of its state records in Kafka's order.
fn state_versions(brokers: &str, topic: &str) -> std::collections::BTreeMap<String, Vec<i64>> {
    let mut records = tally_kafka::read_topic(brokers, topic, Duration::from_secs(10)).expect("read");
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut out: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for r in records {
        let v: Value = serde_json::from_slice(&r.value).expect("a payment resource");
        out.entry(String::from_utf8(r.key).expect("key")).or_default().push(v["version"].as_i64().expect("version"));
    }
    out
}
