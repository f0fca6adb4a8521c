//! The Kafka source: a consumer-group member whose rebalance callback claims each assigned partition in the sink's
//! store, checks the stored position against the log and seeks there (`tally_kafka::position::claim_assigned`), and
//! whose statistics feed the above-the-log check. The stored offsets are the truth; Kafka's group commit afterwards
//! is advisory (it keeps lag tools working).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tally_kafka::position::{self, Admit, Claims, LogPositionError, PositionedClaim};
use tokio_util::sync::CancellationToken;

use crate::{FrameworkError, LogRecord, Source};

/// How a sink claims a partition in its store (blocking; retried by the framework through store outages).
pub type ClaimFn<C> = Box<dyn Fn(&str, i32) -> Result<C, String> + Send + Sync>;

struct Context<C> {
    claim: ClaimFn<C>,
    claims: Arc<Claims<C>>,
    revoked: AtomicBool,
    shutdown: CancellationToken,
    /// A log that went backwards, found in a callback: the poll loop stops the sink with it.
    fatal: Mutex<Option<LogPositionError>>,
    /// Partitions whose fetch position the statistics show above the high watermark: the poll loop asks the broker.
    suspects: Mutex<Vec<(String, i32)>>,
}

impl<C> ClientContext for Context<C>
where
    C: Send + Sync,
{
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let suspects = position::suspects(&statistics);
        if !suspects.is_empty() {
            *self.suspects.lock().expect("suspects lock") = suspects;
        }
    }
}

impl<C> ConsumerContext for Context<C>
where
    C: PositionedClaim + Send + Sync,
{
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // Revoke (or a rebalance error): forget everything not yet committed; the next owner resumes from the
            // stored offsets.
            self.claims.lock().expect("claims lock").clear();
            self.revoked.store(true, Ordering::SeqCst);
            let _ = consumer.unassign();
            return;
        }
        let claims = position::claim_assigned(
            consumer,
            tpl,
            |topic, partition| (self.claim)(topic, partition),
            || self.shutdown.is_cancelled(),
            |e| {
                tracing::error!(error = %e, "stopping the sink");
                self.fatal.lock().expect("fatal lock").get_or_insert(e);
            },
        );
        *self.claims.lock().expect("claims lock") = claims;
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(error = %e, "assign failed");
        }
    }
}

/// The consumer settings a sink chooses.
pub struct KafkaSourceConfig<'a> {
    pub brokers: &'a str,
    pub group_id: &'a str,
    pub topics: &'a [String],
    pub session_timeout_ms: u64,
    pub max_poll_interval_ms: u64,
    /// How long the broker may hold a fetch open: short for a sink whose batch timer bounds latency (the ledger),
    /// longer for one that flushes every few seconds anyway (the archive: each empty fetch costs the local broker).
    pub fetch_wait_max_ms: u64,
}

pub struct KafkaSource<C: PositionedClaim + Send + Sync + 'static> {
    consumer: BaseConsumer<Context<C>>,
    claims: Arc<Claims<C>>,
}

impl<C: PositionedClaim + Send + Sync + 'static> KafkaSource<C> {
    pub fn new(
        config: &KafkaSourceConfig<'_>,
        claim: ClaimFn<C>,
        shutdown: CancellationToken,
    ) -> Result<Self, FrameworkError> {
        let claims: Arc<Claims<C>> = Arc::default();
        let context = Context {
            claim,
            claims: claims.clone(),
            revoked: AtomicBool::new(false),
            shutdown,
            fatal: Mutex::default(),
            suspects: Mutex::default(),
        };
        let consumer: BaseConsumer<Context<C>> = ClientConfig::new()
            .set("bootstrap.servers", config.brokers)
            .set("group.id", config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Every assignment seeks to a stored offset; one out of range is a log that went backwards: an error,
            // never a silent reset (tally_kafka::position).
            .set("auto.offset.reset", "error")
            .set("statistics.interval.ms", position::STATISTICS_INTERVAL_MS.to_string())
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", config.max_poll_interval_ms.to_string())
            .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
            .set("allow.auto.create.topics", "false")
            .create_with_context(context)?;
        consumer.subscribe(&config.topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(KafkaSource { consumer, claims })
    }
}

impl<C: PositionedClaim + Send + Sync + 'static> Source<C> for KafkaSource<C> {
    fn claims(&self) -> &Claims<C> {
        &self.claims
    }

    fn poll(&mut self, timeout: Duration) -> Result<Option<LogRecord>, FrameworkError> {
        let Some(result) = self.consumer.poll(timeout) else { return Ok(None) };
        match result {
            Ok(m) if position::admit_message(&self.claims, &m)? == Some(Admit::Record) => Ok(Some(LogRecord {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default(),
            })),
            Ok(_) => Ok(None),
            // The stored position is not in the log: stop (ADR 0006). Anything else librdkafka retries.
            Err(e) if position::is_out_of_range(&e) => Err(FrameworkError::Consumer(e)),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                Ok(None)
            }
        }
    }

    fn check(&mut self) -> Result<(), FrameworkError> {
        if let Some(e) = self.consumer.context().fatal.lock().expect("fatal lock").take() {
            return Err(e.into());
        }
        let suspects = std::mem::take(&mut *self.consumer.context().suspects.lock().expect("suspects lock"));
        position::confirm_suspects(&self.consumer, suspects, &self.claims)?;
        Ok(())
    }

    fn take_revoked(&mut self) -> bool {
        self.consumer.context().revoked.swap(false, Ordering::SeqCst)
    }

    fn committed(&mut self, ends: &[(String, i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, end) in ends {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*end));
        }
        // Advisory only: the stored offsets are the truth; this keeps standard lag tools meaningful.
        let _ = self.consumer.commit(&tpl, CommitMode::Async);
    }

    fn close(&mut self) {
        self.consumer.unsubscribe();
    }
}
