use serde::Deserialize;

/// `[kafka]` in tally.toml (`TALLY__KAFKA__…` in the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Prepended to every topic name (isolates tests and environments sharing a cluster).
    pub topic_prefix: String,
    /// How long the producer keeps retrying a record before reporting failure; an ingest request waits at most this.
    pub message_timeout_ms: u64,
    /// How long the producer waits to batch records: 5 ms raised ingest from ~3.2K to ~4.7K deliveries/s on the local
    /// broker (docs/benchmarks.md).
    pub linger_ms: u64,
    /// librdkafka's idempotent producer (`enable.idempotence`). Off by default because the local broker (tansu 0.6.0)
    /// panics for good when such a producer bumps its epoch after a message timeout (ADR 0008); Tally's exactly-once
    /// does not rest on it (sinks deduplicate by fact key). Turn it on against a real Kafka cluster.
    pub idempotent_producer: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            message_timeout_ms: 5000,
            linger_ms: 5,
            idempotent_producer: false,
        }
    }
}

impl KafkaConfig {
    /// The full name of a catalogue topic.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }
}
