//! Reading a whole topic, from the low to the high watermark of every partition: for tests and checks that compare
//! what the log holds with what a sink did.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::KafkaError;

/// A record as read back.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch, as the broker reports it.
    pub timestamp_ms: Option<i64>,
}

impl ReadRecord {
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

/// Every record of `topic` that exists when the call starts, without joining a group. Fails if they cannot all be
/// read within `timeout`.
pub fn read_topic(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<ReadRecord>, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tally-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        expected += high - low;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(expected.max(0) as usize);
    let deadline = Instant::now() + timeout;
    while (out.len() as i64) < expected {
        if Instant::now() >= deadline {
            return Err(KafkaError::Incomplete { topic: topic.to_owned(), read: out.len() as i64, expected });
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                .unwrap_or_default();
            out.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp_ms: m.timestamp().to_millis(),
            });
        }
    }
    Ok(out)
}
