//! `tally sink warehouse` in-process against the real broker, PostgreSQL (reference data) and a real DuckDB file:
//! enrichment as of the event (the SCD2 boundary, the ECB's weekend and TARGET-holiday gaps), flags for what the
//! reference data cannot say and re-enrichment once it can, no PII in any table, every consumed record accounted
//! for once, and identical rows for shuffled and duplicated deliveries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use tally_contracts::encode_payment_event;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{topic_for, KafkaConfig, Producer, TOPICS};
use tally_money::{Amount, Currency, Money};
use tally_testkit::{env, free_port, unique};
use tally_warehouse::reference::{load_fx, load_merchants};
use tally_warehouse::WarehouseConfig;
use tokio_util::sync::CancellationToken;

const HEADER: &str = "merchant_id,valid_from,valid_to,legal_name,country,mcc,settlement_currency,risk_tier,stripe_percent,stripe_fixed_minor,adyen_percent,adyen_fixed_minor";

fn ecb_history() -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    std::fs::read(PathBuf::from(dir).join("../../../../shared/fixtures/data/ecb/eurofxref-hist.zip")).unwrap()
}

struct Env {
    kafka: KafkaConfig,
    postgres: tally_postgres::PostgresConfig,
    pool: deadpool_postgres::Pool,
    producer: Producer,
    config: WarehouseConfig,
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), tally_warehouse::sink::SinkError>>>>,
    _dir: tempdir::Dir,
}

struct Running(CancellationToken);

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(tag);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Env {
    async fn new() -> Env {
        let (postgres, pool) = tally_testkit::database("tally_wh_").await;
        let kafka = KafkaConfig {
            brokers: env("TALLY__KAFKA__BROKERS"),
            topic_prefix: unique("w") + ".",
            ..Default::default()
        };
        tally_kafka::ensure_topics(&kafka, TOPICS).await.unwrap();
        let dir = tempdir::Dir::new(&unique("tally-wh-"));
        let config = WarehouseConfig {
            path: dir.0.join("warehouse.duckdb"),
            group_id: unique("g"),
            listen: format!("127.0.0.1:{}", free_port()),
            reference_poll_ms: 200,
            batch_max_records: 500,
            batch_max_wait_ms: 100,
            session_timeout_ms: 6000,
            max_poll_interval_ms: 8000,
            ..Default::default()
        };
        let producer = Producer::new(&kafka).unwrap();
        Env { kafka, postgres, pool, producer, config, running: Default::default(), _dir: dir }
    }

    async fn produce(&self, events: &[PaymentEvent]) {
        for e in events {
            let value = encode_payment_event(e, Some("delivery-test")).unwrap();
            self.producer
                .send(&self.kafka.topic(topic_for(e.kind)), e.payment_id.as_bytes(), &value, &[])
                .await
                .unwrap();
        }
    }

    /// Starts an in-process sink; `stop` shuts it down cleanly. A sink that stops on its own fails the test with
    /// its error.
    fn start(&self) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tally_warehouse::run(
            self.config.clone(),
            self.kafka.clone(),
            self.postgres.clone(),
            shutdown.clone(),
        ));
        *self.running.lock().unwrap() = Some(task);
        Running(shutdown)
    }

    async fn stop(&self, running: Running) {
        running.0.cancel();
        let task = self.running.lock().unwrap().take().expect("a running sink");
        task.await.unwrap().unwrap();
    }

    async fn check_running(&self) {
        let finished = self.running.lock().unwrap().as_ref().is_some_and(|t| t.is_finished());
        if finished {
            let task = self.running.lock().unwrap().take().unwrap();
            panic!("the sink stopped on its own: {:?}", task.await.unwrap());
        }
    }

    /// Rows of a query served by the running sink.
    async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_running().await;
            let r = reqwest::Client::new()
                .post(format!("http://{}/query", self.config.listen))
                .header("content-type", "application/json")
                .body(json!({ "sql": sql }).to_string())
                .send()
                .await;
            match r {
                Ok(r) => {
                    let status = r.status();
                    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
                    assert!(status.is_success(), "{sql}: {v}");
                    return serde_json::from_value(v["rows"].clone()).unwrap();
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the sink does not answer: {e}"),
            }
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        self.query(sql).await[0][0].as_i64().unwrap()
    }

    /// Waits until `sql` (one count) is `n`; a count that passes `n` upwards fails at once (more than produced).
    async fn wait(&self, sql: &str, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.count(sql).await;
            if got == n {
                return;
            }
            assert!(n == 0 || got < n, "{sql}: {got} > {n}");
            assert!(Instant::now() < deadline, "{sql}: {got} of {n} after 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

const ACCOUNTED: &str = "SELECT (SELECT count(*) FROM fct_payment_events) + (SELECT count(*) FROM wh_duplicates)
                              + (SELECT count(*) FROM wh_rejects)";

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

fn capture(tag: &str, n: u32, merchant: &str, minor: i64, code: &str, when: &str) -> PaymentEvent {
    let reference = format!("ch_{tag}_{n}");
    PaymentEvent {
        kind: EventKind::Captured,
        payment_id: format!("stripe:{reference}"),
        psp: Psp::Stripe,
        psp_reference: reference.clone(),
        original_reference: None,
        merchant_id: merchant.to_owned(),
        money: Money::new(Amount::from_minor(minor), Currency::from_code(code).unwrap()),
        fee: None,
        occurred_at: at(when),
        received_at: at(when),
        source: Source::Webhook,
        source_event_id: format!("evt_{reference}"),
        attributes: Attributes {
            card_token: Some(format!("pm_card_{tag}_{n}")),
            card_brand: Some("visa".into()),
            card_country: Some("DE".into()),
            customer_token: Some(format!("jane.doe.{tag}@example.com")),
            device_id: Some(format!("device-{tag}-{n}")),
            payment_method: Some("card".into()),
            reason: (n == 1).then(|| format!("customer Jane Doe {tag}, 221B Baker Street, +44 20 7946 0958")),
        },
    }
}

/// The ECB history's published rate of `code` for `day`, read from the file with plain string handling.
fn published(history_csv: &str, code: &str, day: &str) -> (i128, u32) {
    let mut lines = history_csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == code).unwrap();
    let line = lines.find(|l| l.starts_with(day)).unwrap();
    let cell = line.split(',').nth(col).unwrap();
    let (whole, frac) = cell.split_once('.').unwrap();
    (format!("{whole}{frac}").parse().unwrap(), frac.len() as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_land_enriched_as_of_their_day_flagged_when_unknown_and_enriched_again_once_known() {
    let env = Env::new().await;
    let tag = unique("e");
    let m1 = format!("m1{tag}");
    let dimension = format!(
        "{HEADER}\n{m1},2025-01-01,2026-06-01,Alpha GmbH,DE,5411,EUR,low,2.9,30,1.75,10\n\
         {m1},2026-06-01,,Alpha GmbH,DE,5411,EUR,high,2.9,30,1.75,10\n"
    );
    let merchants = load_merchants(&env.pool, "test", "dim.csv", dimension.as_bytes()).await.unwrap();
    let fx = load_fx(&env.pool, "test", "eurofxref-hist.zip", &ecb_history()).await.unwrap();
    let started = Instant::now();
    let running = env.start();

    let m9 = format!("m9{tag}");
    let events = vec![
        // Saturday after the TARGET holiday of Friday 1 May 2026: Thursday 30 April's rate.
        capture(&tag, 1, &m1, 10_000, "USD", "2026-05-02T12:00:00Z"),
        // The last instant of the old version, and the first of the new one.
        capture(&tag, 2, &m1, 5_000, "EUR", "2026-05-31T23:59:59.999999Z"),
        capture(&tag, 3, &m1, 5_000, "EUR", "2026-06-01T00:00:00Z"),
        // A currency the ECB does not publish, and a merchant the dimension does not know.
        capture(&tag, 4, &m1, 1_000, "BHD", "2026-06-01T10:00:00Z"),
        capture(&tag, 5, &m9, 700, "EUR", "2026-06-02T10:00:00Z"),
    ];
    env.produce(&events).await;
    // The same fact again (a producer retry), and a record that is not a fact.
    env.produce(&events[..1]).await;
    env.producer.send(&env.kafka.topic("payments.capture.v1"), b"stripe:poison", b"not avro", &[]).await.unwrap();
    env.wait(ACCOUNTED, 7).await;
    eprintln!("{:?}: 7 records accounted for", started.elapsed());
    assert_eq!(env.count("SELECT count(*) FROM fct_payment_events").await, 5);
    assert_eq!(env.count("SELECT count(*) FROM wh_duplicates").await, 1);
    let reject = env.query("SELECT reason FROM wh_rejects").await;
    assert_eq!(reject.len(), 1);
    assert!(reject[0][0].as_str().unwrap().contains("Confluent"), "{reject:?}");

    let row = |n: u32| format!("stripe:ch_{tag}_{n}");
    let get = |rows: &Vec<Vec<Value>>, n: u32| -> Vec<Value> {
        rows.iter().find(|r| r[0] == json!(row(n))).cloned().unwrap_or_else(|| panic!("row {n} missing"))
    };
    let rows = env
        .query(
            "SELECT payment_id, CAST(merchant_valid_from AS VARCHAR), merchant_unknown, reporting_amount_minor,
                    CAST(fx_rate_date AS VARCHAR), fx_from_rate, fx_unavailable, merchants_version, fx_version,
                    fx_source
               FROM fct_payment_events",
        )
        .await;
    // 100.00 USD at the rate published for 30 April, rounded once, half away from zero.
    let csv = String::from_utf8(
        std::process::Command::new("unzip")
            .arg("-p")
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../../shared/fixtures/data/ecb/eurofxref-hist.zip"),
            )
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let (mantissa, scale) = published(&csv, "USD", "2026-04-30");
    let num = 10_000i128 * 10i128.pow(scale);
    let eur = (num * 2 + mantissa) / (2 * mantissa);
    let r1 = get(&rows, 1);
    assert_eq!(r1[1], json!("2025-01-01"));
    assert_eq!((r1[3].as_i64().unwrap() as i128, &r1[4]), (eur, &json!("2026-04-30")), "{r1:?}");
    assert_eq!(r1[7], json!(merchants.version_id));
    assert_eq!(r1[8], json!(fx.version_id));
    assert!(r1[9].as_str().unwrap().contains("ECB"));
    assert_eq!(get(&rows, 2)[1], json!("2025-01-01"), "the last instant before valid_from: the old version");
    assert_eq!(get(&rows, 3)[1], json!("2026-06-01"), "exactly at valid_from: the new version");
    assert_eq!(get(&rows, 3)[3], json!(5000), "EUR in EUR is itself");
    let (r4, r5) = (get(&rows, 4), get(&rows, 5));
    assert_eq!((&r4[3], &r4[6], &r4[2]), (&Value::Null, &json!(true), &json!(false)), "BHD: flagged, not guessed");
    assert_eq!((&r5[1], &r5[2], &r5[3]), (&Value::Null, &json!(true), &json!(700)), "m9: flagged, still converted");

    // A rate source that has BHD (ECB format), and a dimension load that knows m9: both rows enriched again.
    let bhd = load_fx(&env.pool, "test", "bhd.csv", b"Date,BHD,\n2026-05-29,0.4123,\n").await.unwrap();
    let m9_dim = format!("{HEADER}\n{m9},2026-01-01,,Nine Ltd,GB,5812,GBP,medium,1.5,20,1.2,10\n");
    let m9_load = load_merchants(&env.pool, "test", "m9.csv", m9_dim.as_bytes()).await.unwrap();
    env.wait("SELECT count(*) FROM fct_payment_events WHERE merchant_unknown OR fx_unavailable", 0).await;
    eprintln!("{:?}: enriched again", started.elapsed());
    let rows = env
        .query(
            "SELECT payment_id, CAST(merchant_valid_from AS VARCHAR), reporting_amount_minor,
                    CAST(fx_rate_date AS VARCHAR), merchants_version, fx_version
               FROM fct_payment_events",
        )
        .await;
    // 1.000 BHD / 0.4123 BHD per EUR = 2.4254… EUR → 2.43.
    assert_eq!(
        &get(&rows, 4)[2..],
        &[json!(243), json!("2026-05-29"), json!(merchants.version_id), json!(bhd.version_id)]
    );
    assert_eq!(&get(&rows, 5)[1..3], &[json!("2026-01-01"), json!(700)]);
    assert_eq!(get(&rows, 5)[4], json!(m9_load.version_id));
    // Rows that were not flagged keep the versions they were enriched with (I5).
    assert_eq!(&get(&rows, 1)[4..], &[json!(merchants.version_id), json!(fx.version_id)]);
    assert_eq!(env.count("SELECT count(*) FROM dim_merchant").await, 3, "the dimension is mirrored");

    // No PII in any table: not the e-mail, the device or card identifiers, nor the free-text reason.
    let columns = env
        .query(
            "SELECT table_name, column_name FROM information_schema.columns
              WHERE data_type = 'VARCHAR' AND table_schema = 'main'",
        )
        .await;
    assert!(columns.len() > 20, "{columns:?}");
    for needle in [format!("jane.doe.{tag}"), format!("device-{tag}"), format!("pm_card_{tag}"), "Baker Street".into()]
    {
        for c in &columns {
            let (t, col) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
            let hits = env.count(&format!("SELECT count(*) FROM \"{t}\" WHERE \"{col}\" LIKE '%{needle}%'")).await;
            assert_eq!(hits, 0, "{needle} found in {t}.{col}");
        }
    }
    eprintln!("{:?}: PII scanned", started.elapsed());
    // Tokens, stable: the five captures share one customer, so one customer key.
    assert_eq!(env.count("SELECT count(DISTINCT customer_key) FROM fct_payment_events").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM fct_payment_events WHERE customer_key LIKE 'tok_%'").await, 5);

    let metrics = reqwest::get(format!("http://{}/metrics", env.config.listen)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tally_warehouse_rows_total 5"), "{metrics}");
    assert!(metrics.contains("tally_warehouse_reenriched_total 2"), "{metrics}");
    env.stop(running).await;

    // After the sink stops, the file answers read-only queries.
    let conn = tally_warehouse::query::open_read_only(&env.config.path).unwrap();
    let a = tally_warehouse::query::run(&conn, "SELECT count(*) FROM fct_payment_events", Duration::from_secs(5), 10)
        .unwrap();
    assert_eq!(a.rows, vec![vec![json!(5)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_and_duplicated_deliveries_land_identical_rows_and_marts_across_restarts() {
    let tag = unique("d");
    let events: Vec<PaymentEvent> = (0..60)
        .map(|n| {
            let code = ["EUR", "USD", "JPY"][n as usize % 3];
            capture(&tag, n + 10, &format!("m{}{tag}", n % 4), 1000 + i64::from(n) * 37, code, "2026-05-04T10:00:00Z")
        })
        .collect();
    const CONTENT: &str =
        "SELECT fact_key, payment_id, kind, merchant_id, currency, amount_minor, reporting_amount_minor,
                                  fx_rate_date, customer_key, card_key FROM fct_payment_events ORDER BY fact_key";
    // The marts' values (not their versions: when a day closes depends on arrival, what it holds must not).
    const MARTS: &str = "SELECT merchant_id, CAST(day AS VARCHAR), currency, captures_count, captured_minor,
                                refunded_minor, chargeback_minor, net_minor, reporting_net_minor, facts
                           FROM mart_merchant_daily ORDER BY 1, 2, 3";
    let (mut results, mut marts) = (Vec::new(), Vec::new());
    for shuffle in [false, true] {
        let env = Env::new().await;
        load_fx(&env.pool, "test", "eurofxref-hist.zip", &ecb_history()).await.unwrap();
        let mut delivered = events.clone();
        if shuffle {
            delivered.extend(events.iter().step_by(3).cloned());
            delivered.shuffle(&mut rand::rngs::StdRng::seed_from_u64(11));
        }
        // Half, a restart (the second member resumes from the stored offsets), then the rest.
        let half = delivered.len() / 2;
        env.produce(&delivered[..half]).await;
        let running = env.start();
        env.wait(ACCOUNTED, half as i64).await;
        env.stop(running).await;
        env.produce(&delivered[half..]).await;
        let running = env.start();
        env.wait(ACCOUNTED, delivered.len() as i64).await;
        assert_eq!(env.count("SELECT count(*) FROM fct_payment_events").await, events.len() as i64);
        assert_eq!(env.count("SELECT count(*) FROM wh_duplicates").await, (delivered.len() - events.len()) as i64);
        results.push(env.query(CONTENT).await);
        marts.push(env.query(MARTS).await);
        env.stop(running).await;
    }
    assert_eq!(results[0].len(), 60);
    assert_eq!(results[0], results[1]);
    assert!(marts[0].len() >= 4, "{:?}", marts[0]);
    assert_eq!(marts[0], marts[1], "identical marts for shuffled and duplicated deliveries (I4)");
}
