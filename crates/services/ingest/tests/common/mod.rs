//! Test harness: a real ingest on 127.0.0.1 against the real broker, PostgreSQL and Redis of `make up`, isolated per
//! test by a topic prefix; private brokers and Redis servers for the tests that take one down.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tally_domain::Secret;
use tally_ingest::{Ingest, IngestConfig};
use tally_kafka::{KafkaConfig, TOPICS};
use tally_postgres::PostgresConfig;
use tally_redis::RedisConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const STRIPE_SECRET: &str = "whsec_tally_test_secret";
pub const ADYEN_KEY: &str = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    // Letters only after the tag: ids made of long digit runs would look like card numbers.
    let alpha: String =
        format!("{}{n}{nanos}", std::process::id()).bytes().map(|b| (b'a' + (b - b'0')) as char).collect();
    format!("{tag}{alpha}")
}

pub fn env(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with `make test` (it starts the stack)"))
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(manifest_dir()).join("../../../../shared/fixtures")
}

pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(fixtures().join(rel)).unwrap()
}

pub struct Harness {
    pub url: String,
    pub kafka: KafkaConfig,
    pub ingest: Arc<Ingest>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub struct Options {
    pub brokers: String,
    pub redis_url: String,
    pub message_timeout_ms: u64,
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: env("TALLY__KAFKA__BROKERS"),
            redis_url: env("TALLY__REDIS__URL"),
            message_timeout_ms: 5000,
            max_body_bytes: 256 * 1024,
        }
    }
}

impl Harness {
    pub async fn start(opts: Options) -> Harness {
        let kafka = KafkaConfig {
            brokers: opts.brokers,
            topic_prefix: unique("t") + ".",
            message_timeout_ms: opts.message_timeout_ms,
            linger_ms: 1,
            ..KafkaConfig::default()
        };
        tally_kafka::ensure_topics(&kafka, TOPICS).await.unwrap();
        let mut config = IngestConfig {
            max_body_bytes: opts.max_body_bytes,
            claim_lease_ms: 2 * opts.message_timeout_ms + 3000,
            ..IngestConfig::default()
        };
        config.stripe.secrets = vec![Secret::new("whsec_rotated_out".into()), Secret::new(STRIPE_SECRET.into())];
        config.adyen.hmac_keys = vec![Secret::new(ADYEN_KEY.into())];
        let postgres = PostgresConfig { url: env("TALLY__POSTGRES__URL"), ..PostgresConfig::default() };
        let redis = RedisConfig { url: opts.redis_url, ..RedisConfig::default() };
        let ingest = Ingest::new(config, kafka.clone(), postgres, redis).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ingest.clone().serve(listener, shutdown.clone()));
        Harness { url, kafka, ingest, shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub fn topic(&self, name: &str) -> String {
        self.kafka.topic(name)
    }

    pub async fn post(&self, path: &str, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> (u16, String) {
        let client = reqwest::Client::new();
        let mut req = client.post(format!("{}{path}", self.url)).body(body.into());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    pub async fn stripe(&self, body: &str) -> (u16, String) {
        let header = stripe_header(body, now_secs());
        self.post(
            "/webhooks/stripe",
            &[("stripe-signature", header), ("content-type", "application/json".into())],
            body,
        )
        .await
    }

    pub async fn adyen(&self, body: &str) -> (u16, String) {
        self.post("/webhooks/adyen", &[("content-type", "application/json".into())], body).await
    }

    /// Every record on a topic of this harness.
    pub fn records(&self, name: &str) -> Vec<Record> {
        read_topic(&self.kafka.brokers, &self.topic(name))
    }

    pub fn lifecycle_count(&self) -> usize {
        TOPICS.iter().filter(|t| t.name.starts_with("payments.")).map(|t| self.records(t.name).len()).sum()
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn stripe_header(body: &str, at: i64) -> String {
    tally_psp::stripe::sign(body.as_bytes(), &Secret::new(STRIPE_SECRET.into()), at)
}

/// A Stripe fixture event made unique: its zeroed ids replaced, so that it is a distinct payment.
pub fn stripe_event(file: &str, tag: &str) -> String {
    fixture(&format!("stripe/webhook-events/{file}"))
        .replace("000000000000000000000000", tag)
        .replace("00000000000000", tag)
}

/// `body` (a Stripe event) as rendered with another API version.
pub fn on_api_version(body: &str, version: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["api_version"] = version.into();
    v.to_string()
}

/// An Adyen standard notification of the given items, each signed with the test key.
pub fn adyen_notification(items: &[serde_json::Value]) -> String {
    let key = tally_psp::adyen::HmacKey::from_hex(ADYEN_KEY).unwrap();
    let wrapped: Vec<serde_json::Value> = items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            let parsed: tally_psp::adyen::wire::NotificationRequestItem = serde_json::from_value(item.clone()).unwrap();
            item["additionalData"]["hmacSignature"] = tally_psp::adyen::sign_item(&parsed, &key).into();
            serde_json::json!({ "NotificationRequestItem": item })
        })
        .collect();
    serde_json::json!({ "live": "false", "notificationItems": wrapped }).to_string()
}

pub fn adyen_item(code: &str, psp_ref: &str, original: Option<&str>, value: i64) -> serde_json::Value {
    let mut item = serde_json::json!({
        "additionalData": {},
        "amount": { "currency": "EUR", "value": value },
        "eventCode": code,
        "eventDate": "2026-11-20T10:00:00+01:00",
        "merchantAccountCode": "TallyTestMerchant",
        "merchantReference": "order-7",
        "paymentMethod": "visa",
        "pspReference": psp_ref,
        "reason": "",
        "success": "true"
    });
    if let Some(o) = original {
        item["originalReference"] = o.into();
    }
    item
}

pub type Record = tally_kafka::ReadRecord;

pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    tally_kafka::read_topic(brokers, topic, Duration::from_secs(20)).unwrap()
}

pub use tally_testkit::{PrivateBroker as Broker, PrivateRedis as Redis};

/// The package's directory as cargo or nextest gives it when the test runs (the compile-time value only as a
/// fallback): a test binary reused from another checkout sharing the target directory still reads this checkout's
/// files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
