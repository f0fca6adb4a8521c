use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::{KafkaConfig, TopicSpec};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic { topic: String, code: RDKafkaErrorCode },
    #[error("read {read} of {expected} records of {topic} before the timeout")]
    Incomplete { topic: String, read: i64, expected: i64 },
}

/// What `ensure_topics` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Created,
    Existed,
}

/// What the broker reports about itself.
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    pub brokers: Vec<String>,
    /// (topic, partitions), sorted by name.
    pub topics: Vec<(String, usize)>,
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "5000")
        // The local broker has no auto-create; say so on the client side too.
        .set("allow.auto.create.topics", "false");
    c
}

/// Creates every topic in `specs` that does not exist. Existing topics are left as they are.
pub async fn ensure_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<Vec<(String, TopicState)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(&config.brokers).create()?;
    let names: Vec<String> = specs.iter().map(|s| config.topic(s.name)).collect();
    let new: Vec<NewTopic> = specs
        .iter()
        .zip(&names)
        .map(|(s, name)| NewTopic::new(name, s.partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(new.iter(), &opts).await?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(topic) => Ok((topic, TopicState::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((topic, TopicState::Existed)),
            Err((topic, code)) => Err(KafkaError::CreateTopic { topic, code }),
        })
        .collect()
}

/// Fetches cluster metadata: the brokers and every topic with its partition count. Blocking (librdkafka's metadata
/// call); run it on a blocking thread from async code.
pub fn health(brokers: &str, timeout: Duration) -> Result<BrokerHealth, KafkaError> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut topics: Vec<(String, usize)> =
        md.topics().iter().map(|t| (t.name().to_owned(), t.partitions().len())).collect();
    topics.sort();
    Ok(BrokerHealth { brokers: md.brokers().iter().map(|b| format!("{}:{}", b.host(), b.port())).collect(), topics })
}

/// One partition's log bounds: records live at offsets `low .. high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// The low/high watermarks of every partition of `topic` (None if the topic does not exist). Blocking.
pub fn watermarks(brokers: &str, topic: &str, timeout: Duration) -> Result<Option<Vec<Watermarks>>, KafkaError> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(t.partitions().len());
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        out.push(Watermarks { partition: p.id(), low, high });
    }
    out.sort_by_key(|w| w.partition);
    Ok(Some(out))
}
