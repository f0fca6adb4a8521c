//! Configuration: typed, strict (unknown keys are errors), layered — defaults, then `tally.toml` (or `--config`),
//! then `TALLY__SECTION__KEY` environment variables. Validated once at start-up; secrets are `Secret<T>`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use tally_archive::ArchiveConfig;
use tally_ingest::IngestConfig;
use tally_kafka::KafkaConfig;
use tally_ledger::LedgerConfig;
use tally_postgres::PostgresConfig;
use tally_redis::RedisConfig;
use tally_warehouse::WarehouseConfig;

/// The whole `tally.toml`. Every section and field has a default that works with `make up`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub ingest: IngestConfig,
    pub ledger: LedgerConfig,
    pub archive: ArchiveConfig,
    pub warehouse: WarehouseConfig,
    pub reports: tally_recon::inbox::ReportsConfig,
    pub audit: tally_audit::config::AuditConfig,
    pub api: tally_api::config::ApiConfig,
    pub relay: tally_relay::RelayConfig,
}

/// Loads the configuration. An explicit `path` must exist; without one, `./tally.toml` is read if present.
pub fn load(path: Option<&Path>) -> Result<Config> {
    let mut figment = Figment::new();
    match path {
        Some(p) if !p.exists() => bail!("config file {} does not exist", p.display()),
        Some(p) => figment = figment.merge(Toml::file(p)),
        None => {
            let default = PathBuf::from("tally.toml");
            if default.exists() {
                figment = figment.merge(Toml::file(default));
            }
        }
    }
    figment = figment.merge(Env::prefixed("TALLY__").split("__"));
    figment.extract().context("invalid configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let config: Config = Figment::new()
            .merge(Toml::string(include_str!("../../../tally.example.toml")))
            .extract()
            .expect("tally.example.toml must load");
        assert_eq!(config.archive.group_id, "tally-archive");
        assert_eq!(config.archive.flush_max_records, 100_000);
        assert_eq!(config.ledger.group_id, "tally-ledger");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn layers_defaults_file_then_environment_and_rejects_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            // `make test` exports the stack's TALLY__ variables; this test sets its own.
            jail.clear_env();
            jail.create_file(
                "tally.toml",
                r#"
                [kafka]
                brokers = "10.0.0.1:9092"
                topic_prefix = "file."
                [ingest.stripe]
                secrets = ["whsec_from_file"]
                "#,
            )?;
            jail.set_env("TALLY__KAFKA__TOPIC_PREFIX", "env.");
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "10.0.0.1:9092"); // file over default
            assert_eq!(c.kafka.topic_prefix, "env."); // environment over file
            assert_eq!(c.ingest.stripe.secrets[0].expose(), "whsec_from_file");
            assert_eq!(c.ingest.stripe.tolerance_secs, 300); // default
            assert!(!format!("{c:?}").contains("whsec_from_file"), "secrets are masked in Debug");

            jail.create_file("bad.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let err = load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("brokerz"), "{err:#}");
            assert!(load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
