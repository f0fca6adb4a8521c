//! The relay against the stack's PostgreSQL (`wal_level = logical`, set by `make up`) and broker: the outbox read
//! through a logical replication slot reaches Kafka in commit order, and a crash between producing and confirming
//! loses nothing (the same transactions are produced again).

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tally_api::merchants::{self, Merchant};
use tally_api::model::{CaptureMethod, Payment, Status};
use tally_api::store::{self, Change, NewPayment};
use tally_domain::{EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{KafkaConfig, Producer, API_TOPICS, TOPICS};
use tally_relay::{Confirm, Relay, RelayConfig};
use tally_testkit::{env, unique};
use uuid::Uuid;

async fn create(pool: &Pool, amount: i64) -> Payment {
    let mut c = pool.get().await.expect("conn");
    let tx = c.transaction().await.expect("tx");
    let p = store::create(
        &tx,
        &NewPayment {
            id: Uuid::from_u128(rand::random()),
            merchant_id: "m_relay",
            merchant_reference: "order",
            amount,
            currency: "EUR",
            capture_method: CaptureMethod::Manual,
            psp: Psp::Stripe,
            secrets: vec![0; 28],
            secrets_key: "k1",
        },
    )
    .await
    .expect("create");
    tx.commit().await.expect("commit");
    p
}

fn fact(kind: EventKind, charge: &str, amount: i64) -> PaymentEvent {
    let t = Timestamp::from_unix_secs(1_764_000_000).expect("ts");
    PaymentEvent {
        kind,
        payment_id: format!("stripe:{charge}"),
        psp: Psp::Stripe,
        psp_reference: charge.into(),
        original_reference: None,
        merchant_id: "platform".into(),
        money: tally_money::Money::new(
            tally_money::Amount::from_minor(amount),
            tally_money::Currency::from_code("EUR").expect("EUR"),
        ),
        fee: None,
        occurred_at: t,
        received_at: t,
        source: Source::Api,
        source_event_id: format!("api:{charge}:{kind}"),
        attributes: Default::default(),
    }
}

async fn change(pool: &Pool, p: &Payment, status: Status, facts: Vec<PaymentEvent>) -> Payment {
    let mut c = pool.get().await.expect("conn");
    let tx = c.transaction().await.expect("tx");
    let amounts = match status {
        Status::Authorized => Change { authorized_amount: Some(p.amount), ..Change::default() },
        Status::Captured => Change { captured_amount: Some(p.amount), ..Change::default() },
        _ => Change::default(),
    };
    let changed = store::transition(&tx, p, Change { status: Some(status), facts, ..amounts }).await.expect("change");
    tx.commit().await.expect("commit");
    changed
}

/// Per payment (record key), the versions of its state records in the order Kafka holds them.
fn versions(brokers: &str, topic: &str) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut records = tally_kafka::read_topic(brokers, topic, Duration::from_secs(20)).expect("read");
    records.sort_by_key(|r| (r.partition, r.offset));
    for r in records {
        assert!(r.header("tally.lsn").is_some(), "every record names the LSN it was read at");
        let v: serde_json::Value = serde_json::from_slice(&r.value).expect("a payment resource");
        out.entry(String::from_utf8(r.key).expect("key")).or_default().push(v["version"].as_i64().expect("version"));
    }
    out
}

/// First occurrences only: what a consumer deduplicating by (payment, version) sees.
fn first_seen(vs: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::BTreeSet::new();
    vs.iter().copied().filter(|v| seen.insert(*v)).collect()
}

#[tokio::test]
async fn the_outbox_reaches_kafka_in_commit_order_and_a_crash_before_confirming_loses_nothing() {
    let (_, pool) = tally_testkit::database("relay_").await;
    let brokers = env("TALLY__KAFKA__BROKERS");
    let kafka = KafkaConfig { brokers: brokers.clone(), topic_prefix: unique("rl") + ".", ..Default::default() };
    tally_kafka::ensure_topics(&kafka, TOPICS).await.expect("topics");
    tally_kafka::ensure_topics(&kafka, API_TOPICS).await.expect("topics");
    let config = RelayConfig { slot: unique("tally_relay_"), ..RelayConfig::default() };
    tally_relay::ensure(&pool, &config).await.expect("slot and publication");
    tally_relay::ensure(&pool, &config).await.expect("ensure is idempotent");
    let m = Merchant {
        merchant_id: "m_relay".into(),
        psps: vec![Psp::Stripe],
        failover: false,
        stripe_account: None,
        adyen_merchant_account: None,
        rate_per_second: 10,
    };
    merchants::create(&pool.get().await.expect("conn"), &m).await.expect("merchant");
    let relay = Relay {
        producer: Producer::new(&kafka).expect("producer"),
        config: config.clone(),
        kafka: kafka.clone(),
        pool: pool.clone(),
        metrics: Default::default(),
    };

    // Three payments whose changes interleave across transactions.
    let p1 = create(&pool, 1_000).await;
    let p2 = create(&pool, 2_000).await;
    let p1 = change(&pool, &p1, Status::Authorized, vec![fact(EventKind::Authorized, "ch_1", 1_000)]).await;
    let p3 = create(&pool, 3_000).await;
    let _p2 = change(&pool, &p2, Status::Failed, vec![fact(EventKind::AuthorizationFailed, "ch_2", 2_000)]).await;
    let p1 = change(&pool, &p1, Status::Captured, vec![fact(EventKind::Captured, "ch_1", 1_000)]).await;

    // Nothing relayed yet: over a limit of one byte the relay is unhealthy, and says by how much.
    let strict = Relay {
        config: RelayConfig { slot_lag_alert_bytes: 1, ..config.clone() },
        producer: relay.producer.clone(),
        kafka: kafka.clone(),
        pool: pool.clone(),
        metrics: Default::default(),
    };
    let unhealthy = strict.health().await.expect_err("a slot holding back WAL over its limit");
    assert!(unhealthy.contains("holds back") && unhealthy.contains("slot_lag_alert_bytes (1)"), "{unhealthy}");
    let metrics = strict.metrics.render();
    assert!(metrics.contains("tally_relay_slot_lag_alert_bytes 1\n"), "{metrics}");
    assert!(relay.health().await.expect("healthy under the default limit").starts_with("ok, slot lag"));
    let gone = Relay {
        config: RelayConfig { slot: "tally_no_such_slot".into(), ..config.clone() },
        producer: relay.producer.clone(),
        kafka: kafka.clone(),
        pool: pool.clone(),
        metrics: Default::default(),
    };
    assert!(gone.health().await.expect_err("no slot").contains("does not exist"));
    assert!(gone.metrics.render().contains("\ntally_relay_slot_lag_bytes -1\n"), "a missing slot is −1, never 0");

    // A relay that produced and died before confirming: the next pass produces the same again, then confirms.
    let first = relay.pass(Confirm::CrashBeforeConfirming).await.expect("pass");
    assert_eq!(first, 6 + 3, "six state rows and three facts");
    let again = relay.pass(Confirm::Yes).await.expect("pass");
    assert_eq!(again, first, "nothing confirmed: the same transactions again");
    assert_eq!(relay.pass(Confirm::Yes).await.expect("pass"), 0, "confirmed: nothing pending");

    let p3 = change(&pool, &p3, Status::Authorized, vec![fact(EventKind::Authorized, "ch_3", 3_000)]).await;
    assert_eq!(relay.pass(Confirm::Yes).await.expect("pass"), 2, "only the new transaction");

    let state = versions(&brokers, &format!("{}payments.api.v1", kafka.topic_prefix));
    let id = |p: &Payment| tally_api::model::public_id(p.id);
    for (p, last) in [(&p1, 3), (&p2, 2), (&p3, 2)] {
        let seen = &state[&id(p)];
        assert_eq!(first_seen(seen), (1..=last).collect::<Vec<_>>(), "{}: every version, in order: {seen:?}", id(p));
    }
    let total: usize = state.values().map(Vec::len).sum();
    assert_eq!(total, 6 * 2 + 1, "at least once: the unconfirmed state rows twice, the later one once");
    for (topic, n) in [("payments.authorization.v1", 2 * 2 + 1), ("payments.capture.v1", 2)] {
        let records =
            tally_kafka::read_topic(&brokers, &format!("{}{topic}", kafka.topic_prefix), Duration::from_secs(20))
                .expect("read");
        assert_eq!(records.len(), n, "{topic}");
        for r in &records {
            let decoded = tally_contracts::decode_payment_event(&r.value).expect("the ledger's encoding");
            assert_eq!(r.key, decoded.event.payment_id.as_bytes(), "keyed by the ledger's payment id");
        }
    }
    assert!(relay.slot_lag().await.expect("lag") >= 0);
    let c = pool.get().await.expect("conn");
    c.execute("SELECT pg_drop_replication_slot($1)", &[&config.slot]).await.expect("slot dropped");
}
