//! Harness for the ledger sink's tests: a database of its own per test (so that global invariants can be checked
//! exactly), topics of its own (a prefix), events produced through the real contract and producer.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tally_contracts::encode_payment_event;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{topic_for, KafkaConfig, Producer, TOPICS};
use tally_ledger::LedgerConfig;
use tally_money::{Amount, Currency, Money};
use tally_postgres::PostgresConfig;
use tokio_util::sync::CancellationToken;

pub use tally_testkit::{env, unique};

pub struct Env {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub ledger: LedgerConfig,
    pub pool: deadpool_postgres::Pool,
    pub producer: Producer,
}

impl Env {
    /// A fresh database (migrated) and fresh topics.
    pub async fn new() -> Env {
        Env::on(&env("TALLY__POSTGRES__URL")).await
    }

    /// The same, on the PostgreSQL server at `base`.
    pub async fn on(base: &str) -> Env {
        Env::with(base, &env("TALLY__KAFKA__BROKERS")).await
    }

    /// The same, on the PostgreSQL server at `base` and the broker at `brokers`.
    pub async fn with(base: &str, brokers: &str) -> Env {
        let (postgres, pool) = tally_testkit::database_on(base, "tally_t_").await;
        let kafka = KafkaConfig { brokers: brokers.to_owned(), topic_prefix: unique("l") + ".", ..Default::default() };
        tally_kafka::ensure_topics(&kafka, TOPICS).await.unwrap();
        let ledger = LedgerConfig {
            group_id: unique("g"),
            batch_max_records: 500,
            batch_max_wait_ms: 100,
            session_timeout_ms: 6000,
            // Killed members never rejoin: do not let a rebalance wait librdkafka's default 300 s for them.
            max_poll_interval_ms: 8000,
        };
        let producer = Producer::new(&kafka).unwrap();
        Env { kafka, postgres, ledger, pool, producer }
    }

    pub async fn produce(&self, events: &[PaymentEvent]) {
        for e in events {
            let value = encode_payment_event(e, Some("delivery-test")).unwrap();
            self.producer
                .send(&self.kafka.topic(topic_for(e.kind)), e.payment_id.as_bytes(), &value, &[])
                .await
                .unwrap();
        }
    }

    /// Rows of a parameterless query on the test database.
    pub async fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.pool.get().await.unwrap().query(sql, &[]).await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.rows(sql).await[0].get(0)
    }

    /// Records the sink has accounted for (booked, duplicate or rejected).
    pub async fn accounted(&self) -> i64 {
        self.count(
            "SELECT (SELECT count(*) FROM event_log) + (SELECT count(*) FROM sink_duplicates) + (SELECT count(*) FROM sink_rejects)",
        )
        .await
    }

    /// Runs an in-process sink until `records` records are accounted for, then shuts it down cleanly.
    pub async fn sink_until(&self, records: i64) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tally_ledger::run(
            self.ledger.clone(),
            self.kafka.clone(),
            self.postgres.clone(),
            shutdown.clone(),
        ));
        self.wait_accounted(records, Duration::from_secs(60)).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    pub async fn wait_accounted(&self, records: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.accounted().await;
            if n >= records {
                assert_eq!(n, records, "more records accounted than produced");
                return;
            }
            if Instant::now() >= deadline {
                let rows = self
                    .rows("SELECT topic, kafka_partition, next_offset, owner_epoch FROM sink_offsets ORDER BY 1, 2")
                    .await;
                let offsets: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{}[{}]={} e{}",
                            r.get::<_, String>(0),
                            r.get::<_, i32>(1),
                            r.get::<_, i64>(2),
                            r.get::<_, i64>(3)
                        )
                    })
                    .collect();
                panic!("only {n} of {records} records accounted for; sink offsets: {offsets:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn balances(&self) -> Vec<(String, String, i64)> {
        let rows = self
            .rows(
                "SELECT account, currency, balance_minor FROM account_balances WHERE balance_minor <> 0 ORDER BY 1, 2",
            )
            .await;
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    }

    pub async fn statuses(&self) -> Vec<(String, Option<String>)> {
        let rows = self.rows("SELECT payment_id, status FROM payments ORDER BY 1").await;
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

/// A fact, as a PSP normaliser would produce it.
pub fn fact(
    psp: Psp,
    kind: EventKind,
    payment: &str,
    reference: &str,
    merchant: &str,
    minor: i64,
    code: &str,
) -> PaymentEvent {
    PaymentEvent {
        kind,
        payment_id: format!("{psp}:{payment}"),
        psp,
        psp_reference: reference.to_owned(),
        original_reference: (reference != payment).then(|| payment.to_owned()),
        merchant_id: merchant.to_owned(),
        money: Money::new(Amount::from_minor(minor), Currency::from_code(code).unwrap()),
        fee: None,
        occurred_at: Timestamp::from_unix_secs(1_760_000_000).unwrap(),
        received_at: Timestamp::from_unix_secs(1_760_000_100).unwrap(),
        source: Source::Webhook,
        source_event_id: format!("evt_{reference}_{kind}"),
        attributes: Attributes::default(),
    }
}

/// Three merchants, three currencies, two PSPs: a full lifecycle each, with hand-computed balances below.
pub fn scenario(tag: &str) -> Vec<PaymentEvent> {
    use EventKind::*;
    let (m1, m2, m3) = (format!("m1{tag}"), format!("m2{tag}"), format!("m3{tag}"));
    let mut settled = fact(Psp::Stripe, Settled, "ch_3", "st_3", &m3, 2000, "USD");
    settled.fee = Some(Amount::from_minor(60));
    let mut settled_across = fact(Psp::Adyen, SettledCredit, "P5", "L5", &m2, 2800, "EUR");
    settled_across.fee = Some(Amount::from_minor(50));
    vec![
        // m1, EUR, Stripe: the refund arrives before its capture (an orphan that must resolve itself).
        fact(Psp::Stripe, Refunded, "ch_1", "re_1", &m1, 2500, "EUR"),
        fact(Psp::Stripe, Authorized, "ch_1", "ch_1", &m1, 10000, "EUR"),
        fact(Psp::Stripe, Captured, "ch_1", "ch_1", &m1, 10000, "EUR"),
        // m2, JPY, Adyen: captured, disputed, lost.
        fact(Psp::Adyen, Authorized, "P2", "P2", &m2, 5000, "JPY"),
        fact(Psp::Adyen, Captured, "P2", "C2", &m2, 5000, "JPY"),
        fact(Psp::Adyen, ChargebackOpened, "P2", "CB2", &m2, 5000, "JPY"),
        fact(Psp::Adyen, ChargebackLost, "P2", "CB2L", &m2, 5000, "JPY"),
        // m3, USD, Stripe: captured and settled with a fee.
        fact(Psp::Stripe, Authorized, "ch_3", "ch_3", &m3, 2000, "USD"),
        fact(Psp::Stripe, Captured, "ch_3", "ch_3", &m3, 2000, "USD"),
        settled,
        // m2, Adyen: USD 30.00 captured, settled as EUR 27.50 after EUR 0.50 of fees (a report line across
        // currencies: the receivable converted from USD to EUR, then settled; ADR 0015 §4).
        fact(Psp::Adyen, Authorized, "P5", "P5", &m2, 3000, "USD"),
        fact(Psp::Adyen, Captured, "P5", "P5", &m2, 3000, "USD"),
        fact(Psp::Adyen, ConversionOut, "P5", "L5|conversion:USD", &m2, 3000, "USD"),
        fact(Psp::Adyen, ConversionIn, "P5", "L5|conversion:EUR", &m2, 2800, "EUR"),
        settled_across,
        // A declined payment: no money moves.
        fact(Psp::Stripe, AuthorizationFailed, "ch_4", "ch_4", &m1, 999, "EUR"),
    ]
}

/// The scenario's balances, worked out by hand (debit +, credit −).
pub fn scenario_balances(tag: &str) -> Vec<(String, String, i64)> {
    let mut v = vec![
        ("cash:stripe".to_owned(), "USD".to_owned(), 1940),
        ("chargeback_losses".to_owned(), "JPY".to_owned(), 5000),
        (format!("merchant_payable:m1{tag}"), "EUR".to_owned(), -7500),
        (format!("merchant_payable:m2{tag}"), "JPY".to_owned(), -5000),
        (format!("merchant_payable:m3{tag}"), "USD".to_owned(), -2000),
        ("psp_fees".to_owned(), "USD".to_owned(), 60),
        ("psp_receivable:stripe".to_owned(), "EUR".to_owned(), 7500),
        ("cash:adyen".to_owned(), "EUR".to_owned(), 2750),
        ("psp_fees".to_owned(), "EUR".to_owned(), 50),
        ("fx_conversion:adyen".to_owned(), "USD".to_owned(), 3000),
        ("fx_conversion:adyen".to_owned(), "EUR".to_owned(), -2800),
        (format!("merchant_payable:m2{tag}"), "USD".to_owned(), -3000),
    ];
    v.sort();
    v
}
