//! `tally topics …` and `tally stack health`: the stack Tally runs on, as Tally sees it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use tally_kafka::{TopicState, TOPICS};

use crate::config::Config;

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create every topic Tally owns that does not exist yet (topics are never auto-created).
    Ensure,
}

#[derive(Subcommand)]
pub enum StackCommand {
    /// Check the broker, PostgreSQL and Redis separately; exit 1 if any is unhealthy.
    Health,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn run_topics(cmd: TopicsCommand, config: &Config) -> Result<ExitCode> {
    let TopicsCommand::Ensure = cmd;
    let results = runtime()?.block_on(tally_kafka::ensure_topics(&config.kafka, TOPICS))?;
    for (topic, state) in results {
        let spec = TOPICS.iter().find(|t| config.kafka.topic(t.name) == topic);
        let state = match state {
            TopicState::Created => "created",
            TopicState::Existed => "exists",
        };
        println!("{topic:<32} {state:<8} {}", spec.map(|s| s.purpose).unwrap_or(""));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_stack(cmd: StackCommand, config: &Config) -> Result<ExitCode> {
    let StackCommand::Health = cmd;
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
        tally_kafka::health(&config.kafka.brokers, Duration::from_secs(5)).map_err(|e| e.to_string()).and_then(|h| {
            let missing: Vec<String> = TOPICS
                .iter()
                .map(|t| config.kafka.topic(t.name))
                .filter(|n| !h.topics.iter().any(|(t, _)| t == n))
                .collect();
            if missing.is_empty() {
                Ok(format!("{} broker(s), {}/{} Tally topics", h.brokers.len(), TOPICS.len(), TOPICS.len()))
            } else {
                Err(format!("topics missing: {} (run `tally topics ensure`)", missing.join(", ")))
            }
        });
    report("kafka", &config.kafka.brokers, kafka);

    let pg = rt.block_on(async {
        let pool = tally_postgres::pool(&config.postgres).map_err(|e| e.to_string())?;
        with_timeout(tally_postgres::health(&pool)).await
    });
    let pg = pg.map(|h| format!("PostgreSQL {} database {}", h.server_version, h.database));
    report("postgres", &redact_url(&config.postgres.url), pg);

    let redis =
        rt.block_on(with_timeout(tally_redis::health(&config.redis.url))).map(|h| format!("Redis {}", h.version));
    report("redis", &redact_url(&config.redis.url), redis);

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
pub fn redact_url(url: &str) -> String {
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

/// `tally migrate`.
pub fn migrate(config: &Config) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        let applied = tally_postgres::migrate(&pool).await?;
        let latest = tally_postgres::MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
        println!("applied {applied:?}; schema at version {latest}");
        Ok(ExitCode::SUCCESS)
    })
}

/// `tally ledger verify`: exit 0 only when every invariant holds.
pub fn ledger_verify(config: &Config) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let report = tally_ledger::verify(&pool, &config.ledger.group_id).await?;
        print!("{}", report.render());
        Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_the_output() {
        assert_eq!(super::redact_url("postgres://u:hunter2@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(super::redact_url("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }
}
