//! `tally topics …` and `tally stack health`: the stack Tally runs on, as Tally sees it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use tally_kafka::{TopicState, TOPICS};

/// Where the stack is. Defaults match `scripts/up.sh`.
#[derive(Args, Clone)]
pub struct Endpoints {
    #[arg(long, env = "TALLY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[arg(long, env = "TALLY_DATABASE_URL", default_value = "postgres://tally@127.0.0.1:54329/tally")]
    database_url: String,
    #[arg(long, env = "TALLY_REDIS_URL", default_value = "redis://127.0.0.1:63799/")]
    redis_url: String,
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create every topic Tally owns that does not exist yet (topics are never auto-created).
    Ensure(Endpoints),
}

#[derive(Subcommand)]
pub enum StackCommand {
    /// Check the broker, PostgreSQL and Redis separately; exit 1 if any is unhealthy.
    Health(Endpoints),
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn run_topics(cmd: TopicsCommand) -> Result<ExitCode> {
    let TopicsCommand::Ensure(ep) = cmd;
    let results = runtime()?.block_on(tally_kafka::ensure_topics(&ep.kafka_brokers, TOPICS))?;
    for (topic, state) in results {
        let spec = TOPICS.iter().find(|t| t.name == topic);
        let state = match state {
            TopicState::Created => "created",
            TopicState::Existed => "exists",
        };
        println!("{topic:<32} {state:<8} {}", spec.map(|s| s.purpose).unwrap_or(""));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_stack(cmd: StackCommand) -> Result<ExitCode> {
    let StackCommand::Health(ep) = cmd;
    let rt = runtime()?;
    let mut healthy = true;
    let mut report = |name: &str, endpoint: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("{name:<9} ok    {endpoint}  {detail}"),
        Err(e) => {
            healthy = false;
            println!("{name:<9} DOWN  {endpoint}  {e}");
        }
    };

    // librdkafka's metadata call blocks; this command has nothing else to do meanwhile.
    let kafka =
        tally_kafka::health(&ep.kafka_brokers, Duration::from_secs(5)).map_err(|e| e.to_string()).and_then(|h| {
            let missing: Vec<&str> =
                TOPICS.iter().map(|t| t.name).filter(|n| !h.topics.iter().any(|(t, _)| t == n)).collect();
            let owned = h.topics.iter().filter(|(t, _)| TOPICS.iter().any(|s| s.name == t)).count();
            if missing.is_empty() {
                Ok(format!("{} broker(s), {owned}/{} Tally topics", h.brokers.len(), TOPICS.len()))
            } else {
                Err(format!("topics missing: {} (run `tally topics ensure`)", missing.join(", ")))
            }
        });
    report("kafka", &ep.kafka_brokers, kafka);

    let pg = rt
        .block_on(with_timeout(tally_postgres::health(&ep.database_url)))
        .map(|h| format!("PostgreSQL {} database {}", h.server_version, h.database));
    report("postgres", &redact_url(&ep.database_url), pg);

    let redis = rt.block_on(with_timeout(tally_redis::health(&ep.redis_url))).map(|h| format!("Redis {}", h.version));
    report("redis", &redact_url(&ep.redis_url), redis);

    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn with_timeout<T, E: std::fmt::Display>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out after 5 s".into()),
    }
}

/// Drops a password from a URL before it is printed.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
