//! Test support shared by the integration tests: names unique per process, loopback ports, and a private tansu
//! broker for tests that do to a broker what must not happen to the shared one (stop it, delete its topics).
//! The shared stack is started by `scripts/up.sh`; its addresses come from `.tally/env`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `tag` + the process id + a counter + the clock's nanoseconds: unique across concurrent test processes.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{tag}{}x{n}x{nanos}", std::process::id())
}

/// A variable of the stack's environment (`.tally/env`), or a panic that says how to get it.
pub fn env(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with `make test` (it starts the stack)"))
}

/// A database of the test's own on the shared PostgreSQL, created empty and migrated: its configuration and pool.
pub async fn database(tag: &str) -> (tally_postgres::PostgresConfig, deadpool_postgres::Pool) {
    let base = env("TALLY__POSTGRES__URL");
    let db = unique(tag);
    let admin = tally_postgres::pool(&tally_postgres::PostgresConfig { url: base.clone(), ..Default::default() })
        .expect("a pool on the shared PostgreSQL");
    admin
        .get()
        .await
        .expect("a connection")
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("CREATE DATABASE");
    let config = tally_postgres::PostgresConfig {
        url: format!("{}/{db}", base.rsplit_once('/').expect("a database url").0),
        ..Default::default()
    };
    let pool = tally_postgres::pool(&config).expect("a pool");
    tally_postgres::migrate(&pool).await.expect("migrations");
    (config, pool)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Waits until something accepts connections on 127.0.0.1:`port` (10 s at most).
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private tansu broker (sqlite engine) in a folder of its own, removed on drop.
pub struct PrivateBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        let dir = std::env::temp_dir().join(unique("tally-broker-"));
        std::fs::create_dir_all(&dir).expect("the broker's folder");
        let mut b = PrivateBroker { port: free_port(), dir, child: None };
        b.restart();
        b
    }

    /// The `bootstrap.servers` string.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(env("TALLY_TANSU_BIN"))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        wait_port(self.port);
    }

    /// kill -9.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes `spec`'s topic (under `kafka`'s prefix) and creates it again, empty: the broker restarts its offsets at 0.
/// For a private broker only: tansu's delete stalls every producer of the broker while it runs.
pub async fn recreate_topic(kafka: &tally_kafka::KafkaConfig, spec: &tally_kafka::TopicSpec) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("an admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topic = kafka.topic(spec.name);
    for r in admin.delete_topics(&[topic.as_str()], &opts).await.expect("deleting the topic") {
        r.expect("the topic deleted");
    }
    // Created again once the broker has finished the deletion: until then it answers that the topic exists, or
    // times out (seen for over 30 s on a private broker while the million-event test loads the same disk).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let created = tally_kafka::ensure_topics(kafka, std::slice::from_ref(spec)).await;
        if matches!(created.as_deref(), Ok([(_, tally_kafka::TopicState::Created)])) {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} could not be created again after its deletion: {created:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
