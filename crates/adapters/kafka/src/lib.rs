//! Kafka adapter. librdkafka (bundled by the `rdkafka` crate) is a C build: it lives in this crate only, so the
//! pure core compiles and tests in seconds.

mod admin;
mod config;
pub mod position;
mod producer;
mod reader;
mod topics;

pub use admin::{ensure_topics, health, watermarks, BrokerHealth, KafkaError, TopicState, Watermarks};
pub use config::KafkaConfig;
pub use producer::{Header, Producer};
pub use reader::{read_topic, ReadRecord};
pub use topics::{topic_for, TopicSpec, API_TOPICS, LIFECYCLE_TOPICS, RAW_TOPIC, TOPICS};
