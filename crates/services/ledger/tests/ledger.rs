//! Issue 4's acceptance tests that run the sink in-process, against the real broker and PostgreSQL.

mod common;

use common::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tally_domain::{EventKind, Psp};
use tally_ledger::{verify, Decoded, Incoming, LedgerStore, StoreError};
use tally_testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_for_several_merchants_and_currencies_books_the_expected_balances() {
    let env = Env::new().await;
    let tag = unique("s");
    let events = scenario(&tag);
    // The refund first, alone: booked, and an orphan while its capture is unknown.
    env.produce(&events[..1]).await;
    env.sink_until(1).await;
    assert_eq!(env.count("SELECT count(*) FROM dq_exceptions WHERE kind = 'orphan' AND resolved_at IS NULL").await, 1);
    // The rest, by a restarted sink that resumes from its stored offsets.
    env.produce(&events[1..]).await;
    env.sink_until(events.len() as i64).await;

    assert_eq!(env.balances().await, scenario_balances(&tag));
    let statuses = env.statuses().await;
    let status = |p: &str| statuses.iter().find(|(id, _)| id == p).and_then(|(_, s)| s.clone());
    assert_eq!(status("stripe:ch_1").as_deref(), Some("partially_refunded"));
    assert_eq!(status("adyen:P2").as_deref(), Some("chargeback_lost"));
    assert_eq!(status("stripe:ch_3").as_deref(), Some("settled"));
    assert_eq!(status("stripe:ch_4").as_deref(), Some("authorization_failed"));
    // The refund that came before its capture was an orphan, and resolved itself. (A capture booked before its
    // authorization — they travel on different topics — is an orphan for a moment too; it must resolve as well.)
    let refund_key = events[0].fact_key().0;
    let refund_orphan = env
        .rows(&format!(
            "SELECT resolved_at IS NOT NULL FROM dq_exceptions WHERE kind = 'orphan' AND fact_key = '{refund_key}'"
        ))
        .await;
    assert_eq!(refund_orphan.len(), 1, "the refund's orphan was recorded once");
    assert!(refund_orphan[0].get::<_, bool>(0), "and resolved when the capture arrived");
    assert_eq!(env.count("SELECT count(*) FROM dq_exceptions WHERE kind = 'orphan' AND resolved_at IS NULL").await, 0);
    // Lineage on every entry.
    assert_eq!(env.count("SELECT count(*) FROM entries WHERE topic = '' OR processor_version = ''").await, 0);
    // Merchant view with a freshness watermark.
    let captured = env
        .count(&format!("SELECT captured_minor FROM merchant_views WHERE merchant_id = 'm1{tag}' AND currency = 'EUR'"))
        .await;
    assert_eq!(captured, 10000);

    let report = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
    assert_eq!(report.facts, events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_and_duplicated_deliveries_give_identical_balances_and_statuses() {
    let tag = unique("p");
    let events = scenario(&tag);
    // Once in order …
    let a = Env::new().await;
    a.produce(&events).await;
    a.sink_until(events.len() as i64).await;
    // … and once shuffled with every fact delivered two or three times (retries and restatements).
    let b = Env::new().await;
    let mut delivered: Vec<_> =
        events.iter().flat_map(|e| std::iter::repeat_n(e.clone(), 2 + e.psp_reference.len() % 2)).collect();
    delivered.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    b.produce(&delivered).await;
    b.sink_until(delivered.len() as i64).await;

    assert_eq!(b.balances().await, a.balances().await);
    assert_eq!(b.statuses().await, a.statuses().await);
    assert_eq!(b.count("SELECT count(*) FROM event_log").await, events.len() as i64);
    assert_eq!(
        b.count("SELECT count(*) FROM sink_duplicates WHERE NOT conflict").await,
        (delivered.len() - events.len()) as i64
    );
    let report = verify(&b.pool, &b.ledger.group_id).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dlq_with_its_reason_and_the_rest_is_booked() {
    let env = Env::new().await;
    let tag = unique("x");
    let events = scenario(&tag);
    env.produce(&events[..3]).await;
    let capture_topic = env.kafka.topic("payments.capture.v1");
    env.producer.send(&capture_topic, b"stripe:ch_poison", b"{\"not\": \"avro\"}", &[]).await.unwrap();
    env.produce(&events[3..]).await;
    env.sink_until(events.len() as i64 + 1).await;

    assert_eq!(env.count("SELECT count(*) FROM event_log").await, events.len() as i64);
    assert_eq!(env.count("SELECT count(*) FROM sink_rejects").await, 1);
    assert_eq!(env.balances().await, scenario_balances(&tag));
    let dlq = env.kafka.topic("payments.dlq.v1");
    let records = tally_kafka::read_topic(&env.kafka.brokers, &dlq, std::time::Duration::from_secs(20)).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.key, b"stripe:ch_poison");
    assert_eq!(r.value, b"{\"not\": \"avro\"}", "the DLQ keeps the original bytes");
    let header = |k: &str| r.header(k).map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(header("origin_topic").as_deref(), Some(capture_topic.as_str()));
    assert!(header("reason").unwrap().contains("Confluent"), "{:?}", header("reason"));
    let report = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_is_fenced_and_writes_nothing() {
    let env = Env::new().await;
    let tag = unique("z");
    let event = fact(Psp::Stripe, EventKind::Captured, &format!("ch_{tag}"), &format!("ch_{tag}"), "mz", 100, "EUR");
    let value = tally_contracts::encode_payment_event(&event, None).unwrap();
    let record = |offset| {
        Decoded::decode(Incoming {
            topic: "payments.capture.v1".into(),
            partition: 0,
            offset,
            key: Some(event.payment_id.clone().into_bytes()),
            value: Some(value.clone()),
        })
    };
    let store = LedgerStore::new(env.pool.clone(), "fencing");
    let zombie = store.claim("payments.capture.v1", 0).await.unwrap();
    let owner = store.claim("payments.capture.v1", 0).await.unwrap();
    assert_eq!(owner.epoch, zombie.epoch + 1, "a new owner bumps the epoch");
    // The zombie still believes it owns the partition: its batch aborts, nothing of it stays.
    let err = store.commit(&[(zombie.clone(), 1)], &[record(0)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert_eq!(env.count("SELECT count(*) FROM event_log").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM entries").await, 0);
    // The owner books it; a replay of the same range (a batch that must start where the last ended) is refused too.
    store.commit(&[(owner.clone(), 1)], &[record(0)]).await.unwrap();
    assert!(matches!(store.commit(&[(owner, 1)], &[record(0)]).await, Err(StoreError::Fenced { .. })));
    assert_eq!(env.count("SELECT count(*) FROM event_log").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM entries").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rows_are_append_only_and_journals_must_balance() {
    let env = Env::new().await;
    let tag = unique("a");
    let events = scenario(&tag);
    env.produce(&events).await;
    env.sink_until(events.len() as i64).await;
    let client = env.pool.get().await.unwrap();
    for sql in [
        "UPDATE entries SET amount_minor = amount_minor + 1",
        "DELETE FROM entries",
        "UPDATE event_log SET amount_minor = 1",
        "DELETE FROM journals",
        "TRUNCATE entries",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
    // An unbalanced journal is refused at commit by the deferred constraint trigger.
    let err = client
        .batch_execute(
            "BEGIN;
             INSERT INTO journals (fact_key, payment_id, kind) SELECT fact_key, payment_id, kind FROM event_log
                WHERE kind = 'authorized' LIMIT 1;
             INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                kafka_offset, processor_version)
             SELECT journal_id, 'cash:test', 'EUR', 5, fact_key, 't', 0, 0, 'test' FROM journals
                WHERE kind = 'authorized' LIMIT 1;
             COMMIT;",
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("does not balance"), "{err:?}");
    // Checked at COMMIT, not per statement: a journal whose legs arrive in two statements of one transaction is
    // booked, and one whose second statement leaves it unbalanced is refused whole.
    let journal = "INSERT INTO journals (fact_key, payment_id, kind) SELECT fact_key, payment_id, kind FROM event_log
                    WHERE kind = 'authorized' AND fact_key NOT IN (SELECT fact_key FROM journals) LIMIT 1";
    let leg = |amount: i64| {
        format!(
            "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                kafka_offset, processor_version)
             SELECT journal_id, 'cash:test', 'EUR', {amount}, fact_key, 't', 0, 0, 'test' FROM journals
              WHERE kind = 'authorized' AND journal_id NOT IN (SELECT journal_id FROM entries WHERE amount_minor = {amount})
              ORDER BY journal_id DESC LIMIT 1"
        )
    };
    let before = env.count("SELECT count(*) FROM entries").await;
    client.batch_execute(&format!("BEGIN; {journal}; {}; {}; COMMIT;", leg(7), leg(-7))).await.unwrap();
    assert_eq!(env.count("SELECT count(*) FROM entries").await, before + 2);
    let err = client.batch_execute(&format!("BEGIN; {journal}; {}; {}; COMMIT;", leg(7), leg(-6))).await.unwrap_err();
    assert!(format!("{err:?}").contains("does not balance"), "{err:?}");
    client.batch_execute("ROLLBACK").await.ok();
    assert_eq!(env.count("SELECT count(*) FROM entries").await, before + 2);
    // What the foreign keys checked: an entry needs its journal, a journal needs its fact in the event log.
    let err = client
        .batch_execute(
            "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                kafka_offset, processor_version)
             VALUES (987654321, 'cash:test', 'EUR', 5, gen_random_uuid(), 't', 0, 0, 'test'),
                    (987654321, 'cash:test', 'EUR', -5, gen_random_uuid(), 't', 0, 0, 'test')",
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("journal 987654321 does not exist"), "{err:?}");
    let err = client
        .batch_execute("INSERT INTO journals (fact_key, payment_id, kind) VALUES (gen_random_uuid(), 'p', 'captured')")
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("is not in the event log"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_consumption_loses_and_doubles_nothing() {
    let cluster = PgCluster::start();
    let env = Env::on(&cluster.url()).await;
    let tag = unique("r");
    let mut events = Vec::new();
    for i in 0..150 {
        for kind in [EventKind::Authorized, EventKind::Captured] {
            events.push(fact(
                Psp::Stripe,
                kind,
                &format!("ch_{i}{tag}"),
                &format!("ch_{i}{tag}"),
                &format!("m{tag}"),
                1000 + i,
                "EUR",
            ));
        }
    }
    env.produce(&events[..100]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sink =
        tokio::spawn(tally_ledger::run(env.ledger.clone(), env.kafka.clone(), env.postgres.clone(), shutdown.clone()));
    env.wait_accounted(100, std::time::Duration::from_secs(60)).await;
    // Restart the database under the running sink, with records arriving meanwhile.
    cluster.ctl("stop");
    env.produce(&events[100..]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    cluster.ctl("start");
    env.wait_accounted(events.len() as i64, std::time::Duration::from_secs(60)).await;
    shutdown.cancel();
    sink.await.unwrap().unwrap();
    assert_eq!(env.count("SELECT count(*) FROM event_log").await, events.len() as i64);
    let captured: i64 = (0..150).map(|i| 1000 + i).sum();
    assert_eq!(
        env.balances().await,
        vec![
            (format!("merchant_payable:m{tag}"), "EUR".into(), -captured),
            ("psp_receivable:stripe".into(), "EUR".into(), captured),
        ]
    );
    let report = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_database_refuses_is_isolated_and_rejected_without_stalling() {
    let env = Env::new().await;
    let tag = unique("n");
    let events = scenario(&tag);
    // Valid Avro, a valid fact, but PostgreSQL text cannot hold a NUL byte (SQLSTATE 22021).
    let mut refused = fact(Psp::Stripe, EventKind::Captured, "ch_nul", "ch_nul", "m\u{0}x", 100, "EUR");
    refused.source_event_id = "evt_nul".into();
    env.produce(&events[..5]).await;
    env.produce(std::slice::from_ref(&refused)).await;
    env.produce(&events[5..]).await;
    env.sink_until(events.len() as i64 + 1).await;

    assert_eq!(env.count("SELECT count(*) FROM event_log").await, events.len() as i64, "the rest is booked");
    assert_eq!(
        env.count("SELECT count(*) FROM sink_rejects WHERE reason LIKE 'refused by the ledger database%'").await,
        1
    );
    assert_eq!(env.balances().await, scenario_balances(&tag));
    let report = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(report.is_clean(), "{}", report.render());
}

/// Issue 13, item 1: a journal that balances, and that the balances agree with, but that moves other money than its
/// fact — what a consistently wrong posting rule leaves in the database — passes every older check of `verify` and
/// fails the tie-out of each journal against its fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balanced_journal_that_moves_other_money_than_its_fact_is_found() {
    let env = Env::new().await;
    let tag = unique("t");
    let events = scenario(&tag);
    env.produce(&events).await;
    env.sink_until(events.len() as i64).await;
    let clean = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(clean.is_clean(), "{}", clean.render());

    // The capture of ch_1 (10000 EUR) posted 100 more on both legs, and the balances moved with it.
    let captured = events.iter().find(|e| e.kind == EventKind::Captured && e.payment_id == "stripe:ch_1").unwrap();
    let key = captured.fact_key().0;
    let client = env.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                                  kafka_offset, processor_version)
             SELECT journal_id, account, currency, sign(amount_minor) * 100, fact_key, topic, kafka_partition,
                    kafka_offset, processor_version
             FROM entries WHERE fact_key = '{key}';
             UPDATE account_balances SET balance_minor = balance_minor + 100
              WHERE account = 'psp_receivable:stripe' AND currency = 'EUR';
             UPDATE account_balances SET balance_minor = balance_minor - 100
              WHERE account = 'merchant_payable:m1{tag}' AND currency = 'EUR';"
        ))
        .await
        .unwrap();
    let report = verify(&env.pool, &env.ledger.group_id).await.unwrap();
    assert!(
        report.unbalanced_journals.is_empty() && report.balance_mismatches.is_empty() && report.missing_journals == 0,
        "the older checks see nothing wrong: {}",
        report.render()
    );
    assert_eq!(report.amount_mismatches.len(), 1, "{}", report.render());
    assert!(report.amount_mismatches[0].contains(&key.to_string()), "{}", report.amount_mismatches[0]);
    assert!(!report.is_clean());
}
