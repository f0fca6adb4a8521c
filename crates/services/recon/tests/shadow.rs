//! `tally recon shadow` against the real broker and PostgreSQL: breaks raised within seconds of their evidence (a
//! line with no fact, an amount that differs, an SLA that the reports pass), a break cleared when the fact it
//! lacked arrives, and the same breaks as the nightly run on the same inputs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_kafka::{Header, KafkaConfig, Producer};
use tally_money::{Amount, Currency, Money};
use tally_recon::shadow::{self, ShadowConfig};
use tally_recon::store;
use tally_recon::{reconcile, Fact, Rules};
use tally_testkit::{database, env, unique};

fn capture(charge: &str, minor: i64, at: &str) -> PaymentEvent {
    let at = Timestamp::parse_rfc3339(at).unwrap();
    PaymentEvent {
        kind: EventKind::Captured,
        payment_id: format!("stripe:{charge}"),
        psp: Psp::Stripe,
        psp_reference: charge.to_owned(),
        original_reference: None,
        merchant_id: "acct_1".into(),
        money: Money::new(Amount::from_minor(minor), Currency::from_code("EUR").unwrap()),
        fee: None,
        occurred_at: at,
        received_at: at,
        source: Source::Webhook,
        source_event_id: format!("evt_{charge}"),
        attributes: Attributes::default(),
    }
}

async fn produce(producer: &Producer, kafka: &KafkaConfig, e: &PaymentEvent) {
    let key = e.fact_key().to_string();
    let topic = kafka.topic(tally_kafka::topic_for(e.kind));
    let value = tally_contracts::encode_payment_event(e, None).unwrap();
    producer
        .send(&topic, e.payment_id.as_bytes(), &value, &[Header { key: "fact_key", value: key.as_bytes() }])
        .await
        .unwrap();
}

/// The recorded breaks of these payments still open, as (type, payment).
async fn open_breaks(pool: &deadpool_postgres::Pool, payments: &[String]) -> BTreeSet<(String, String)> {
    let rows = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT kind, payment_id FROM recon_breaks b WHERE payment_id = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM recon_resolutions r WHERE r.break_id = b.break_id)",
            &[&payments],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < Duration::from_secs(30), "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_raises_breaks_from_evidence_clears_them_and_agrees_with_the_nightly_run() {
    let (pg, pool) = database("recon_shadow").await;
    let kafka =
        KafkaConfig { brokers: env("TALLY__KAFKA__BROKERS"), topic_prefix: unique("s") + ".", ..Default::default() };
    tally_kafka::ensure_topics(&kafka, tally_kafka::TOPICS).await.unwrap();
    let producer = Producer::new(&kafka).unwrap();
    let run = unique("r").replace(['-', '.'], "");
    let ch = |n: &str| format!("ch_{run}{n}");
    // A settles as captured, B one cent high, C never (its due passes the reports' coverage), D's line comes
    // before its capture; the report also settles a payment no delivery stated.
    let (a, b, c, d, ghost) = (ch("A"), ch("B"), ch("C"), ch("D"), ch("G"));
    for e in [
        capture(&a, 10_000, "2026-03-02T10:00:00Z"),
        capture(&b, 5_000, "2026-03-02T11:00:00Z"),
        capture(&c, 7_000, "2026-03-02T12:00:00Z"),
    ] {
        produce(&producer, &kafka, &e).await;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    // A failing assertion must stop the service too (its consumer thread would keep the runtime alive).
    let _stop_on_panic = shutdown.clone().drop_guard();
    let config = ShadowConfig { group_id: unique("shadow"), listen: "127.0.0.1:0".into(), ..Default::default() };
    let service = tokio::spawn(shadow::run(config, kafka.clone(), pg.clone(), shutdown.clone()));
    until("the three captures in shadow_facts", || async {
        pool.get().await.unwrap().query_one("SELECT count(*) FROM shadow_facts", &[]).await.unwrap().get::<_, i64>(0)
            == 3
    })
    .await;

    let report = format!(
        "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id
txn_{run}1,2026-03-02 12:00:00,2026-03-04 00:00:00,eur,100.00,0.00,100.00,charge,{a},{a}
txn_{run}2,2026-03-02 12:00:00,2026-03-04 00:00:00,eur,50.01,0.00,50.01,charge,{b},{b}
txn_{run}3,2026-03-03 12:00:00,2026-03-05 00:00:00,eur,30.00,0.00,30.00,charge,{d},{d}
txn_{run}4,2026-03-04 12:00:00,2026-03-06 00:00:00,eur,12.00,0.00,12.00,charge,{ghost},{ghost}
"
    );
    let parsed = tally_psp::stripe::report::parse("balance.csv", report.as_bytes(), &Default::default()).unwrap();
    store::import(&pool, &parsed).await.unwrap();
    let imported = Instant::now();
    let payments: Vec<String> = [&a, &b, &c, &d, &ghost].iter().map(|x| format!("stripe:{x}")).collect();
    let expected: BTreeSet<(String, String)> =
        [("amount_mismatch", &b), ("missing_at_psp", &c), ("missing_in_ledger", &d), ("missing_in_ledger", &ghost)]
            .iter()
            .map(|(k, p)| ((*k).to_owned(), format!("stripe:{p}")))
            .collect();
    loop {
        let found = open_breaks(&pool, &payments).await;
        if found == expected {
            break;
        }
        assert!(imported.elapsed() < Duration::from_secs(30), "after 30 s: {found:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latency = imported.elapsed();
    eprintln!("file → breaks recorded: {latency:?}");
    assert!(latency < Duration::from_secs(10), "{latency:?}");

    // D's capture arrives: its line is no longer a settlement for a payment the ledger does not know.
    produce(&producer, &kafka, &capture(&d, 3_000, "2026-03-03T10:00:00Z")).await;
    let cleared = until("D's break cleared", || async {
        !open_breaks(&pool, &payments).await.contains(&("missing_in_ledger".to_owned(), format!("stripe:{d}")))
    })
    .await;
    eprintln!("fact → break cleared: {cleared:?}");
    let shadow: BTreeSet<(String, String)> = open_breaks(&pool, &payments).await;
    assert_eq!(shadow.len(), 3, "{shadow:?}");

    // The nightly run on the same inputs (every stored line, the same facts) finds the same breaks, by id.
    let lines = store::lines(&pool).await.unwrap();
    let facts: Vec<Fact> = store::shadow_facts(&pool, &payments).await.unwrap();
    assert_eq!(facts.len(), 4);
    let sla = |_: Psp| 2;
    let price = |_: &str, _: Psp, _| None;
    let nightly = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    let nightly_ids: BTreeSet<String> = nightly.breaks.iter().map(|b| b.id()).collect();
    let shadow_ids: BTreeSet<String> = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT break_id FROM recon_breaks b WHERE NOT EXISTS
                (SELECT 1 FROM recon_resolutions r WHERE r.break_id = b.break_id)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(shadow_ids, nightly_ids, "nightly: {:#?}", nightly.breaks);

    // A break a nightly run recorded is not the shadow's to clear, whatever the shadow sees of its payment.
    let nightly_only = tally_recon::Break {
        kind: tally_recon::BreakKind::CategoryMismatch,
        psp: Psp::Stripe,
        payment_id: Some(format!("stripe:{a}")),
        line: None,
        fact_key: None,
        fact: None,
        amount: None,
        detail: "recorded by a nightly run".into(),
    };
    store::record_breaks(&pool, std::slice::from_ref(&nightly_only), "tally recon psp", None).await.unwrap();
    // A's capture again (a redelivery): the shadow matches A again and finds no such break.
    produce(&producer, &kafka, &capture(&a, 10_000, "2026-03-02T10:00:00Z")).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let open = open_breaks(&pool, &payments).await;
    assert!(open.contains(&("category_mismatch".to_owned(), format!("stripe:{a}"))), "{open:?}");

    shutdown.cancel();
    service.await.unwrap().unwrap();
}
