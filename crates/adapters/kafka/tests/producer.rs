//! The producer against a private local broker that hangs (SIGSTOP) while records are in flight: the records time
//! out and are reported as failed, and once the broker is back both the producer and the broker keep working, with
//! every record that was reported delivered in the log, in order.
//!
//! With `idempotent_producer = true`, tansu 0.6.0 panics in this scenario (librdkafka bumps its epoch after the
//! timeouts; the broker has no row for the new epoch, ADR 0008): run
//! `cargo nextest run -p tally-kafka --run-ignored only` to see it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_kafka::{KafkaConfig, Producer, TopicSpec};

struct Broker {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Broker {
    fn start() -> Broker {
        let tansu = std::env::var("TALLY_TANSU_BIN")
            .expect("TALLY_TANSU_BIN is not set: run the tests with `make test` (it installs the broker)");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tally-producer-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not open 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { port, dir, child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
        if sig == "-STOP" {
            // `kill` returns once the signal is sent, not once the broker stopped: on a loaded machine it may answer
            // a few more requests. Wait until every one of its threads is stopped (state T).
            let deadline = Instant::now() + Duration::from_secs(5);
            let task_dir = format!("/proc/{}/task", self.child.id());
            let stopped = || {
                std::fs::read_dir(&task_dir).is_ok_and(|tasks| {
                    tasks.flatten().all(|t| {
                        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
                    })
                })
            };
            while !stopped() {
                assert!(Instant::now() < deadline, "the broker did not stop");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    fn signal_cont_and_kill(&mut self) -> std::io::Result<()> {
        Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status()?;
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.signal_cont_and_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn send_numbered(producer: &Producer, topic: &str, from: u32, to: u32) -> Vec<Result<u32, String>> {
    let sends = (from..to).map(|n| async move {
        producer.send(topic, b"one-key", n.to_string().as_bytes(), &[]).await.map(|_| n).map_err(|e| e.to_string())
    });
    futures::future::join_all(sends).await
}

async fn hanging_broker_scenario(idempotent: bool) {
    let broker = Broker::start();
    let config = KafkaConfig {
        brokers: format!("127.0.0.1:{}", broker.port),
        topic_prefix: "p.".into(),
        message_timeout_ms: 1500,
        linger_ms: 1,
        idempotent_producer: idempotent,
    };
    let spec = TopicSpec { name: "hang.v1", partitions: 1, purpose: "test" };
    tally_kafka::ensure_topics(&config, &[spec]).await.unwrap();
    let topic = config.topic(spec.name);
    let producer = Producer::new(&config).unwrap();

    let before = send_numbered(&producer, &topic, 0, 20).await;
    assert!(before.iter().all(Result::is_ok), "{before:?}");

    // The broker hangs with requests in flight: every record times out and is reported as failed.
    broker.signal("-STOP");
    let during = send_numbered(&producer, &topic, 20, 60).await;
    assert!(during.iter().all(Result::is_err), "a record was acknowledged by a stopped broker: {during:?}");
    assert!(during[0].as_ref().unwrap_err().contains("timed out"), "{:?}", during[0]);
    broker.signal("-CONT");

    // Back: the same producer delivers again, within a few attempts (the hung requests drain first).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 60;
    // Every record acknowledged on the way back, also those of batches that were not all acknowledged: exactly where a
    // lost acknowledgement would show (issue 13, item 4).
    let mut recovering: Vec<u32> = Vec::new();
    let after = loop {
        let batch = send_numbered(&producer, &topic, next, next + 20).await;
        next += 20;
        recovering.extend(batch.iter().filter_map(|r| r.as_ref().ok()));
        if batch.iter().all(Result::is_ok) {
            break batch;
        }
        assert!(
            !broker.log().contains("panicked"),
            "the broker panicked after the producer's timeouts:\n{}",
            broker.log().lines().filter(|l| l.contains("panicked")).collect::<Vec<_>>().join("\n")
        );
        assert!(Instant::now() < deadline, "the producer did not recover: {batch:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(after.len(), 20);
    assert!(!broker.log().contains("panicked"), "the broker panicked");

    // Every acknowledged record is in the log, in the order it was sent; the timed-out ones may or may not be
    // (the hung broker can still write a request it had read), and a retried one may be there twice, but the first
    // copies are never out of order.
    let records = tally_kafka::read_topic(&config.brokers, &topic, Duration::from_secs(10)).unwrap();
    let values: Vec<u32> =
        records.iter().map(|r| std::str::from_utf8(&r.value).unwrap().parse::<u32>().unwrap()).collect();
    let acked: Vec<u32> = before.iter().map(|r| *r.as_ref().unwrap()).chain(recovering).collect();
    assert!(acked.len() >= 40, "{acked:?}");
    for n in &acked {
        assert!(values.contains(n), "acknowledged record {n} is not in the log: {values:?}");
    }
    let mut first_seen = values.clone();
    let mut seen = std::collections::HashSet::new();
    first_seen.retain(|n| seen.insert(*n));
    assert!(first_seen.windows(2).all(|w| w[0] < w[1]), "records out of order: {values:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_timing_out_on_a_hung_broker_leave_producer_and_broker_working() {
    hanging_broker_scenario(false).await;
}

/// Shows the broker bug that makes `idempotent_producer` off by default (ADR 0008); expected to fail on tansu 0.6.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "documents tansu 0.6.0's panic on an idempotent producer's epoch bump (ADR 0008)"]
async fn idempotent_producer_on_a_hung_broker() {
    hanging_broker_scenario(true).await;
}
