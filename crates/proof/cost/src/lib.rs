//! The monthly cost model behind `tally cost`: **measured** per-event coefficients (`data/coefficients.toml`, each
//! with the command that measured it) times a **cited** price table (`data/prices.toml`, each price with its public
//! source and date) and stated sizing assumptions, per component. Integers throughout (nano-dollars, bytes,
//! core-microseconds): an estimate, but one whose arithmetic is exact and reproducible.

use serde::Deserialize;

pub const COEFFICIENTS: &str = include_str!("../data/coefficients.toml");
pub const PRICES: &str = include_str!("../data/prices.toml");

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("{file}: {error}")]
    Parse { file: String, error: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub core_us_per_1000: u64,
    pub derivation: String,
    pub command: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bytes {
    pub per_event: u64,
    pub derivation: String,
    pub command: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTable {
    pub ingest: Cpu,
    pub ledger: Cpu,
    pub warehouse: Cpu,
    pub archive: Cpu,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesTable {
    pub kafka: Bytes,
    pub ledger: Bytes,
    pub archive: Bytes,
    pub warehouse: Bytes,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coefficients {
    pub cpu: CpuTable,
    pub bytes: BytesTable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub nano_usd: u64,
    pub unit: String,
    pub source: String,
    pub date: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assumptions {
    pub headroom_percent: u64,
    pub kafka_replication: u64,
    pub kafka_retention_days: u64,
    pub kafka_unit_mb_per_sec: u64,
    pub kafka_min_units: u64,
    pub kafka_consumers: u64,
    pub postgres_retention_days: u64,
    pub archive_retention_days: u64,
    pub warehouse_retention_days: u64,
    pub warehouse_query_rpu: u64,
    pub warehouse_query_hours_per_day: u64,
    pub cross_az_share_percent: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub hours_per_month: u64,
    pub compute_vcpu_hour: Price,
    pub kafka_unit_hour: Price,
    pub kafka_storage_gb_month: Price,
    pub postgres_instance_hour: Price,
    pub postgres_storage_gb_month: Price,
    pub object_storage_gb_month: Price,
    pub warehouse_storage_gb_month: Price,
    pub warehouse_rpu_hour: Price,
    pub transfer_inter_az_gb: Price,
    pub assumptions: Assumptions,
}

pub fn parse_coefficients(file: &str, text: &str) -> Result<Coefficients, CostError> {
    toml::from_str(text).map_err(|e| CostError::Parse { file: file.to_owned(), error: e.to_string() })
}

pub fn parse_prices(file: &str, text: &str) -> Result<Prices, CostError> {
    toml::from_str(text).map_err(|e| CostError::Parse { file: file.to_owned(), error: e.to_string() })
}

/// One component's monthly cost and how it was sized.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    pub component: &'static str,
    pub nano_usd: u128,
    pub sizing: String,
}

/// The month at `events_per_sec` (facts at the edge).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Month {
    pub events_per_sec: u64,
    pub lines: Vec<Line>,
}

impl Month {
    pub fn total_nano_usd(&self) -> u128 {
        self.lines.iter().map(|l| l.nano_usd).sum()
    }
}

const GB: u128 = 1_000_000_000;
const MICRO: u128 = 1_000_000;

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

/// Projects one month at `events_per_sec`.
pub fn project(c: &Coefficients, p: &Prices, events_per_sec: u64) -> Month {
    let a = &p.assumptions;
    let eps = u128::from(events_per_sec);
    let hours = u128::from(p.hours_per_month);
    let secs_month = hours * 3600;
    let headroom = |micro_cores: u128| micro_cores * (100 + u128::from(a.headroom_percent)) / 100;
    // Cores (×1e6) a service needs: events/s × core-µs per event.
    let micro_cores = |cpu: &Cpu| headroom(eps * u128::from(cpu.core_us_per_1000) / 1000);
    let stored = |bytes: &Bytes, days: u64| eps * u128::from(bytes.per_event) * u128::from(days) * 86_400;
    let price = |x: &Price| u128::from(x.nano_usd);
    let mut lines = Vec::new();

    let services = [&c.cpu.ingest, &c.cpu.archive, &c.cpu.warehouse];
    let compute: u128 = services.iter().map(|s| micro_cores(s)).sum();
    lines.push(Line {
        component: "compute (ingest, archive and warehouse sinks)",
        nano_usd: compute * hours * price(&p.compute_vcpu_hour) / MICRO,
        sizing: format!("{:.2} vCPU incl. headroom", Fixed(compute, 6)),
    });

    let ingress = eps * u128::from(c.bytes.kafka.per_event);
    let units = ceil_div(ingress * u128::from(a.kafka_replication), u128::from(a.kafka_unit_mb_per_sec) * MICRO)
        .max(u128::from(a.kafka_min_units));
    let kafka_bytes = stored(&c.bytes.kafka, a.kafka_retention_days) * u128::from(a.kafka_replication);
    lines.push(Line {
        component: "managed Kafka (brokers + storage)",
        nano_usd: units * hours * price(&p.kafka_unit_hour) + kafka_bytes * price(&p.kafka_storage_gb_month) / GB,
        sizing: format!(
            "{units} broker units for {:.2} MB/s in ×{} replicas; {} GB stored ({} days)",
            Fixed(ingress, 6),
            a.kafka_replication,
            kafka_bytes / GB,
            a.kafka_retention_days
        ),
    });

    let pg_cores = micro_cores(&c.cpu.ledger);
    let instances = ceil_div(pg_cores, 2 * MICRO).max(1);
    let pg_bytes = stored(&c.bytes.ledger, a.postgres_retention_days);
    lines.push(Line {
        component: "PostgreSQL (ledger, Multi-AZ)",
        nano_usd: instances * hours * price(&p.postgres_instance_hour)
            + pg_bytes * price(&p.postgres_storage_gb_month) / GB,
        sizing: format!(
            "{instances} × 2 vCPU for {:.2} vCPU (sink + database); {} GB ({} days)",
            Fixed(pg_cores, 6),
            pg_bytes / GB,
            a.postgres_retention_days
        ),
    });

    let archive = stored(&c.bytes.archive, a.archive_retention_days);
    lines.push(Line {
        component: "object storage (Parquet archive)",
        nano_usd: archive * price(&p.object_storage_gb_month) / GB,
        sizing: format!("{} GB at steady state ({} days)", archive / GB, a.archive_retention_days),
    });

    let warehouse = stored(&c.bytes.warehouse, a.warehouse_retention_days);
    let rpu_hours = u128::from(a.warehouse_query_rpu) * hours * u128::from(a.warehouse_query_hours_per_day) / 24;
    lines.push(Line {
        component: "warehouse (storage + query capacity)",
        nano_usd: warehouse * price(&p.warehouse_storage_gb_month) / GB + rpu_hours * price(&p.warehouse_rpu_hour),
        sizing: format!(
            "{} GB at steady state ({} days); {rpu_hours} RPU-hours",
            warehouse / GB,
            a.warehouse_retention_days
        ),
    });

    let crossing = ingress
        * (u128::from(a.kafka_replication.saturating_sub(1)) + u128::from(a.kafka_consumers))
        * u128::from(a.cross_az_share_percent)
        / 100
        * secs_month;
    lines.push(Line {
        component: "inter-AZ transfer",
        nano_usd: crossing * price(&p.transfer_inter_az_gb) / GB,
        sizing: format!("{} GB a month (replication + consumers)", crossing / GB),
    });
    Month { events_per_sec, lines }
}

/// A fixed-point number `value / 10^scale`, printed with the precision asked for.
pub struct Fixed(pub u128, pub u32);

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = f.precision().unwrap_or(2) as u32;
        let scale = 10u128.pow(self.1);
        let shown = 10u128.pow(digits.min(self.1));
        let rounded = (self.0 * shown + scale / 2) / scale;
        if digits == 0 {
            write!(f, "{rounded}")
        } else {
            write!(f, "{}.{:0width$}", rounded / shown, rounded % shown, width = digits as usize)
        }
    }
}

/// Dollars, whole, with thousands separators.
pub fn dollars(nano_usd: u128) -> String {
    let whole = (nano_usd + GB / 2) / GB;
    let s = whole.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    format!("${out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> (Coefficients, Prices) {
        (parse_coefficients("coefficients", COEFFICIENTS).unwrap(), parse_prices("prices", PRICES).unwrap())
    }

    #[test]
    fn the_shipped_tables_parse_and_every_price_names_its_source() {
        let (c, p) = tables();
        assert!(c.cpu.ingest.core_us_per_1000 > 0 && !c.cpu.ingest.command.is_empty());
        for price in [&p.compute_vcpu_hour, &p.kafka_unit_hour, &p.postgres_instance_hour, &p.object_storage_gb_month] {
            assert!(price.source.starts_with("https://") && !price.date.is_empty(), "{price:?}");
        }
        assert!(parse_prices("bad", "hours_per_month = 1").is_err());
    }

    #[test]
    fn hand_computed_components_at_a_simple_rate() {
        let (mut c, p) = tables();
        c.cpu.ingest.core_us_per_1000 = 1_000_000; // 1 core-second per 1,000 events
        c.cpu.archive.core_us_per_1000 = 0;
        c.cpu.warehouse.core_us_per_1000 = 0;
        let m = project(&c, &p, 1000);
        // 1,000 events/s × 1 ms = 1 core, ×2 headroom = 2 vCPU × 730 h × $0.0408 = $59.568.
        assert_eq!(m.lines[0].nano_usd, 59_568_000_000);
        // The archive: 1,000/s × 985 B × 365 days = 31,063 GB × $0.023 ≈ $714.
        let archive = m.lines.iter().find(|l| l.component.starts_with("object")).unwrap();
        assert_eq!(dollars(archive.nano_usd), "$714");
    }

    #[test]
    fn ten_times_the_volume_costs_more_but_not_more_than_ten_times() {
        let (c, p) = tables();
        let (one, ten) = (project(&c, &p, 1150), project(&c, &p, 11_500));
        assert!(ten.total_nano_usd() > one.total_nano_usd());
        assert!(ten.total_nano_usd() <= 10 * one.total_nano_usd(), "fixed minimums only make it cheaper per event");
        assert_eq!(dollars(1_234_567_000_000_000), "$1,234,567");
        assert_eq!(format!("{:.2}", Fixed(1_234_567, 6)), "1.23");
    }
}
