//! `tally bench ingest`: signed deliveries at a local ingest, beside a baseline measured in the same run — the same
//! server's `/bench/raw` endpoint, which only produces the body to Kafka (no verification, no dedup, no encoding).
//! Rounds alternate baseline and pipeline; medians are reported, since this machine is noisy.

// Timing statistics, never money: the workspace-wide float ban does not apply here.
#![allow(clippy::float_arithmetic)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tally_domain::Secret;
use tally_ingest::Ingest;
use tally_kafka::TOPICS;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Args)]
pub struct IngestArgs {
    /// Deliveries per round and mode.
    #[arg(long, default_value_t = 20_000)]
    deliveries: usize,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds (each runs the baseline, then the pipeline).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const SECRET: &str = "whsec_bench_only";

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

pub fn run(args: IngestArgs, mut config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // An isolated set of topics, so that the benchmark never mixes with real data.
        config.kafka.topic_prefix = format!("bench.{}.", std::process::id());
        tally_kafka::ensure_topics(&config.kafka, TOPICS).await?;
        config.ingest.bench_baseline = true;
        config.ingest.stripe.secrets = vec![Secret::new(SECRET.into())];
        config.ingest.stripe.tolerance_secs = 24 * 3600;
        let ingest = Ingest::new(config.ingest, config.kafka.clone(), config.postgres, config.redis).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(ingest.clone().serve(listener, shutdown.clone()));

        println!(
            "tally bench ingest: {} deliveries × {} rounds, {} connections, client and server in one process on {} cores",
            args.deliveries,
            args.rounds,
            args.concurrency,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        let mut baseline = Vec::new();
        let mut pipeline = Vec::new();
        for round in 0..args.rounds {
            let bodies = deliveries(args.deliveries, round);
            let b = drive(&base, "/bench/raw", &bodies, args.concurrency).await?;
            let p = drive(&base, "/webhooks/stripe", &bodies, args.concurrency).await?;
            println!(
                "round {}: baseline {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms | pipeline {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms",
                round + 1,
                b.per_sec,
                ms(b.p50),
                ms(b.p99),
                p.per_sec,
                ms(p.p50),
                ms(p.p99)
            );
            baseline.push(b);
            pipeline.push(p);
        }
        let produced = ingest.metrics.facts_produced.load(std::sync::atomic::Ordering::Relaxed);
        let (b, p) = (median(&baseline), median(&pipeline));
        println!("median   : baseline {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms", b.0, b.1, b.2);
        println!("median   : pipeline {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms", p.0, p.1, p.2);
        println!("ratio    : pipeline/baseline throughput {:.2}", p.0 / b.0);
        println!("facts produced by the pipeline: {produced} (expected {})", args.deliveries * args.rounds);
        shutdown.cancel();
        server.await??;
        anyhow::ensure!(produced as usize == args.deliveries * args.rounds, "the pipeline lost or doubled deliveries");
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Medians of (throughput, p50 ms, p99 ms) over rounds.
fn median(runs: &[Run]) -> (f64, f64, f64) {
    let pick = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (
        pick(runs.iter().map(|r| r.per_sec).collect()),
        pick(runs.iter().map(|r| ms(r.p50)).collect()),
        pick(runs.iter().map(|r| ms(r.p99)).collect()),
    )
}

/// Signed Stripe `charge.captured` deliveries, each a distinct charge (one fact each), with a realistic body size.
fn deliveries(n: usize, round: usize) -> Vec<(String, String)> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let secret = Secret::new(SECRET.to_owned());
    let run: u32 = rand::random();
    (0..n)
        .map(|i| {
            let id = format!("bench{run:x}r{round}n{i}");
            let body = format!(
                r#"{{"id":"evt_{id}","object":"event","api_version":"2020-08-27","created":{now},"type":"charge.captured","livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"data":{{"object":{{"id":"ch_{id}","object":"charge","amount":1999,"amount_captured":1999,"amount_refunded":0,"captured":true,"currency":"eur","customer":"cus_{id}","description":"order {id}","failure_code":null,"paid":true,"status":"succeeded","payment_intent":"pi_{id}","payment_method_details":{{"type":"card","card":{{"brand":"visa","country":"DE","fingerprint":"fp{id}","last4":"4242","exp_month":12,"exp_year":2030,"funding":"credit"}}}},"metadata":{{}}}}}}}}"#
            );
            let header = tally_psp::stripe::sign(body.as_bytes(), &secret, now);
            (body, header)
        })
        .collect()
}

async fn drive(base: &str, path: &str, bodies: &[(String, String)], concurrency: usize) -> Result<Run> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let url = Arc::new(format!("{base}{path}"));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = Arc::new(bodies.to_vec());
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (client, url, next, bodies) = (client.clone(), url.clone(), next.clone(), bodies.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, header)) = bodies.get(i) else { break };
                let t = Instant::now();
                let resp =
                    client.post(url.as_str()).header("stripe-signature", header).body(body.clone()).send().await?;
                let status = resp.status();
                let _ = resp.bytes().await?;
                anyhow::ensure!(status.is_success(), "{url} answered {status}");
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        })
    });
    let mut latencies = Vec::with_capacity(bodies.len());
    for w in futures::future::join_all(workers).await {
        latencies.extend(w.context("worker panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Run { per_sec: latencies.len() as f64 / elapsed.as_secs_f64(), p50: at(0.50), p99: at(0.99) })
}
