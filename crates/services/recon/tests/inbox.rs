//! `tally reports watch` against the real broker and PostgreSQL: a report dropped into the inbox is imported and
//! booked once it stops changing and moved to `imported/`; a bad one is moved to `refused/` with its errors (file,
//! line, column) and nothing stored or booked; the same bytes again change nothing; a file still being written
//! (`.part`) is left alone until it is renamed.

use std::path::Path;
use std::time::{Duration, Instant};

use tally_kafka::KafkaConfig;
use tally_recon::inbox::{self, ReportsConfig};
use tally_testkit::{database, env, unique};

const HEADER: &str =
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id";

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(30), "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_into_the_inbox_are_imported_or_refused_and_moved_with_what_happened() {
    let (pg, pool) = database("recon_inbox").await;
    let kafka =
        KafkaConfig { brokers: env("TALLY__KAFKA__BROKERS"), topic_prefix: unique("i") + ".", ..Default::default() };
    tally_kafka::ensure_topics(&kafka, tally_kafka::TOPICS).await.unwrap();
    let dir = std::env::temp_dir().join(unique("tally-inbox"));
    std::fs::create_dir_all(&dir).unwrap();
    let run = unique("r").replace(['-', '.'], "");
    let good = format!(
        "{HEADER}\ntxn_{run}1,2026-03-02 12:00:00,2026-03-04 00:00:00,eur,100.00,2.90,97.10,charge,ch_{run}1,ch_{run}1\n\
         txn_{run}2,2026-03-02 13:00:00,2026-03-04 00:00:00,eur,-20.00,0.00,-20.00,refund,re_{run}2,ch_{run}1\n"
    );
    let bad = format!("{HEADER}\ntxn_{run}3,2026-03-02 12:00:00,2026-03-04 00:00:00,eur,1.234,0.00,1.234,charge,ch_{run}3,ch_{run}3\n");
    std::fs::write(dir.join("balance_1.csv"), &good).unwrap();
    std::fs::write(dir.join("balance_bad.csv"), &bad).unwrap();
    // Still being written: never taken under this name.
    std::fs::write(dir.join("balance_2.csv.part"), &good).unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    // A failing assertion must stop the service too (its consumer thread would keep the runtime alive).
    let _stop_on_panic = shutdown.clone().drop_guard();
    let config =
        ReportsConfig { inbox: Some(dir.clone()), poll_ms: 50, listen: "127.0.0.1:0".into(), ..Default::default() };
    let service = tokio::spawn(inbox::watch(config, kafka.clone(), pg.clone(), shutdown.clone()));
    until("both files taken", || names(&dir.join("imported")).len() == 1 && names(&dir.join("refused")).len() == 2)
        .await;
    assert_eq!(names(&dir.join("imported")), ["balance_1.csv"]);
    assert_eq!(names(&dir.join("refused")), ["balance_bad.csv", "balance_bad.csv.errors.txt"]);
    let errors = std::fs::read_to_string(dir.join("refused/balance_bad.csv.errors.txt")).unwrap();
    assert!(errors.contains("balance_bad.csv:2: column \"gross\""), "{errors}");
    assert_eq!(names(&dir), ["balance_2.csv.part", "imported", "refused"]);
    let client = pool.get().await.unwrap();
    let files: i64 = client.query_one("SELECT count(*) FROM report_files", &[]).await.unwrap().get(0);
    assert_eq!(files, 1, "the refused file stored nothing");
    // The good file's two lines, booked: on the settlement topic, keyed by their payment.
    let booked =
        tally_kafka::read_topic(&kafka.brokers, &kafka.topic("payments.settlement-report.v1"), Duration::from_secs(10))
            .unwrap();
    assert_eq!(booked.len(), 2);

    // The upload finishes (renamed), with the same bytes as the first: stored before, nothing new booked.
    std::fs::rename(dir.join("balance_2.csv.part"), dir.join("balance_2.csv")).unwrap();
    until("the renamed file taken", || names(&dir.join("imported")).len() == 2).await;
    let files: i64 = client.query_one("SELECT count(*) FROM report_files", &[]).await.unwrap().get(0);
    assert_eq!(files, 1);
    let booked =
        tally_kafka::read_topic(&kafka.brokers, &kafka.topic("payments.settlement-report.v1"), Duration::from_secs(10))
            .unwrap();
    assert_eq!(booked.len(), 2, "the same bytes book nothing again");
    shutdown.cancel();
    service.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
