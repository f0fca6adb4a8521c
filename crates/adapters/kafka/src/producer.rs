//! The producer every Tally writer uses: `acks=all`, so that a delivery report means the record is durable (I1), and
//! per-partition order kept across librdkafka's own retries. With `kafka.idempotent_producer` those retries never
//! duplicate a record either; without it (the default, for the local broker: ADR 0008) one may, and the sinks, which
//! deduplicate by fact key, book it once.

use std::time::Duration;

use rdkafka::message::{Header as RdHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::{KafkaConfig, KafkaError};

/// A record header.
pub struct Header<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
}

/// A cheap-to-clone handle on one librdkafka producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    /// How long `send` may wait for room in librdkafka's queue. Bounded, so that a send ends within
    /// `queue_timeout + message.timeout.ms` (librdkafka counts the message timeout from the enqueue): ingest's
    /// claim lease relies on that bound (ADR 0005).
    queue_timeout: Duration,
}

impl Producer {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        if config.idempotent_producer {
            // Up to 5 requests in flight per partition, order and uniqueness kept by sequence numbers.
            client.set("enable.idempotence", "true");
        } else {
            // Without sequence numbers only one request in flight keeps a retried batch from overtaking the next one.
            client.set("enable.idempotence", "false").set("max.in.flight.requests.per.connection", "1");
        }
        let inner: FutureProducer = client
            .set("acks", "all")
            // lz4, never snappy: the local broker's snappy is broken (ADR 0002).
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger_ms.to_string())
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set("allow.auto.create.topics", "false")
            .create()?;
        Ok(Producer { inner, queue_timeout: Duration::from_millis(config.message_timeout_ms) })
    }

    /// Produces one record and waits for its delivery report. Returns (partition, offset). Ends within
    /// 2 × `message.timeout.ms`: a full queue is an error after the queue timeout, never an unbounded wait.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        headers: &[Header<'_>],
    ) -> Result<(i32, i64), KafkaError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for h in headers {
            owned = owned.insert(RdHeader { key: h.key, value: Some(h.value) });
        }
        let record = FutureRecord::to(topic).key(key).payload(value).headers(owned);
        let delivery = self
            .inner
            .send(record, Timeout::After(self.queue_timeout))
            .await
            .map_err(|(e, _)| KafkaError::Client(e))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Metadata round trip to the cluster, for health checks. Blocking.
    pub fn ping(&self, timeout: Duration) -> Result<usize, KafkaError> {
        Ok(self.inner.client().fetch_metadata(None, timeout)?.brokers().len())
    }

    /// Waits for every in-flight record (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.inner.flush(timeout)?)
    }
}
