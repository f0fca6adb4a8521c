//! `tally cost`: the monthly cost at today's volume, at `--scale` times it, and at the seeds' 45K and 180K events/s,
//! from measured coefficients and a cited price table (`tally_cost`). Exit 1 when `--budget` is exceeded at the
//! scaled volume.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tally_cost::{dollars, parse_coefficients, parse_prices, project, COEFFICIENTS, PRICES};

#[derive(Args)]
pub struct CostArgs {
    /// Today's volume in facts per second at the edge. Default: 500 transactions/s (the seed's figure) × 2.3 facts
    /// per payment (the simulator's lifecycle mix, `make demo`: 20,000 events / 8,655 payments).
    #[arg(long, default_value_t = 1_150)]
    events_per_sec: u64,
    /// The multiple of today's volume to project (and to hold against `--budget`).
    #[arg(long, default_value_t = 10)]
    scale: u64,
    /// Monthly budget in USD (the seeds: 40000, 35000): exit 1 when the scaled month exceeds it.
    #[arg(long)]
    budget: Option<u64>,
    /// Another price table (the shipped one: crates/proof/cost/data/prices.toml).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Other coefficients (the shipped ones: crates/proof/cost/data/coefficients.toml).
    #[arg(long)]
    coefficients: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn read(path: &Option<PathBuf>, shipped: &str) -> Result<(String, String)> {
    match path {
        Some(p) => Ok((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => Ok(("(shipped)".into(), shipped.to_owned())),
    }
}

pub fn run(args: CostArgs) -> Result<ExitCode> {
    let (cname, ctext) = read(&args.coefficients, COEFFICIENTS)?;
    let (pname, ptext) = read(&args.prices, PRICES)?;
    let c = parse_coefficients(&cname, &ctext)?;
    let p = parse_prices(&pname, &ptext)?;
    let rates = [args.events_per_sec, args.events_per_sec * args.scale, 45_000, 180_000];
    let months: Vec<_> = rates.iter().map(|r| project(&c, &p, *r)).collect();
    let scaled = months[1].total_nano_usd();
    let over = args.budget.is_some_and(|b| scaled > u128::from(b) * 1_000_000_000);
    if args.json {
        let v = serde_json::json!({
            "months": months,
            "totals_usd": months.iter().map(|m| (m.total_nano_usd() + 500_000_000) / 1_000_000_000).collect::<Vec<_>>(),
            "budget_usd": args.budget, "over_budget": over,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let head = ["1×".to_owned(), format!("{}×", args.scale), "45K/s".into(), "180K/s".into()];
        println!("monthly cost (USD), facts/s: {}", rates.map(|r| r.to_string()).join(" / "));
        println!("{:<48} {:>12} {:>12} {:>12} {:>12}", "component", head[0], head[1], head[2], head[3]);
        for (i, line) in months[0].lines.iter().enumerate() {
            let cells: Vec<String> = months.iter().map(|m| dollars(m.lines[i].nano_usd)).collect();
            println!("{:<48} {:>12} {:>12} {:>12} {:>12}", line.component, cells[0], cells[1], cells[2], cells[3]);
        }
        let totals: Vec<String> = months.iter().map(|m| dollars(m.total_nano_usd())).collect();
        println!("{:<48} {:>12} {:>12} {:>12} {:>12}", "total", totals[0], totals[1], totals[2], totals[3]);
        println!("\nsizing at {}×:", args.scale);
        for l in &months[1].lines {
            println!("  {:<46} {}", l.component, l.sizing);
        }
        println!("\ncoefficients {cname} (measured; CPU figures are upper bounds from a 2-core machine):");
        for (name, cpu) in [
            ("ingest", &c.cpu.ingest),
            ("ledger", &c.cpu.ledger),
            ("warehouse", &c.cpu.warehouse),
            ("archive", &c.cpu.archive),
        ] {
            println!(
                "  cpu {name:<10} {:>8} core-µs / 1,000 facts — {}; {}",
                cpu.core_us_per_1000, cpu.derivation, cpu.command
            );
        }
        for (name, b) in [
            ("kafka", &c.bytes.kafka),
            ("ledger", &c.bytes.ledger),
            ("archive", &c.bytes.archive),
            ("warehouse", &c.bytes.warehouse),
        ] {
            println!("  bytes {name:<8} {:>8} B / fact — {}", b.per_event, b.derivation);
        }
        println!("prices {pname} (each with its source and date: see the file); assumptions: headroom {}%, Kafka RF {} × {} days, archive {} days, warehouse {} days",
            p.assumptions.headroom_percent, p.assumptions.kafka_replication, p.assumptions.kafka_retention_days,
            p.assumptions.archive_retention_days, p.assumptions.warehouse_retention_days);
        if let Some(b) = args.budget {
            println!(
                "\nbudget ${b}/month at {}×: {}",
                args.scale,
                if over { format!("EXCEEDED ({})", dollars(scaled)) } else { format!("within ({})", dollars(scaled)) }
            );
        }
    }
    Ok(if over { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
