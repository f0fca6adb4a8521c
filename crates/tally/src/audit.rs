//! `tally audit`: the audit log's checkpoints, verification, proofs and the auditor's export (tally_audit).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use tally_audit::store;
use tally_audit::{NoteSigner, NoteVerifier};

use crate::config::Config;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Signs the current tree head (a C2SP checkpoint, Ed25519) and stores it. Run it periodically (cron).
    Checkpoint {
        #[arg(long)]
        json: bool,
    },
    /// The whole log against every signed checkpoint: signatures, roots, the records' bytes. Exit 1 on a problem.
    Verify {
        /// The verifier key (`NAME+HASH+KEY`, or a file holding it); default: the configured signing key's.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The inclusion proof of one record in the newest checkpoint.
    Prove {
        seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// Writes the bundle an auditor checks without Tally (signs a checkpoint first if the log grew).
    Export {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The records, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Prints a new signing key and its verifier key (Go's note formats); set the first as `[audit] signing_key`.
    Keygen {
        /// The key's name (default: the configured origin).
        #[arg(long)]
        name: Option<String>,
    },
}

fn signer(config: &Config) -> Result<NoteSigner> {
    let (signer, created) = config.audit.signer()?;
    if created {
        eprintln!(
            "created an audit signing key in {} (verifier key beside it as .pub): production sets [audit] signing_key",
            config.audit.key_file.display()
        );
    }
    Ok(signer)
}

fn verifier(config: &Config, key: Option<String>) -> Result<NoteVerifier> {
    match key {
        Some(k) if std::path::Path::new(&k).exists() => {
            Ok(NoteVerifier::parse(&std::fs::read_to_string(&k).with_context(|| format!("reading {k}"))?)?)
        }
        Some(k) => Ok(NoteVerifier::parse(&k)?),
        None => config.audit.verifier()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no verifier key: give --key (the verifier key or its file), or configure [audit] signing_key / key_file"
            )
        }),
    }
}

pub fn run(cmd: AuditCommand, config: &Config) -> Result<ExitCode> {
    if let AuditCommand::Keygen { name } = &cmd {
        let (skey, vkey) =
            NoteSigner::generate(name.as_deref().unwrap_or(&config.audit.origin), NoteSigner::random_seed()?)?;
        println!("signing key (secret: [audit] signing_key / TALLY__AUDIT__SIGNING_KEY): {skey}");
        println!("verifier key (give it to auditors): {vkey}");
        return Ok(ExitCode::SUCCESS);
    }
    crate::archive::runtime()?.block_on(async {
        let pool = tally_postgres::pool(&config.postgres)?;
        tally_postgres::migrate(&pool).await?;
        let origin = &config.audit.origin;
        match cmd {
            AuditCommand::Keygen { .. } => unreachable!("handled above"),
            AuditCommand::Checkpoint { json } => {
                let (cp, note) = store::checkpoint(&pool, &signer(config)?, origin).await?;
                if json {
                    println!("{}", serde_json::json!({"origin": cp.origin, "size": cp.size, "root": cp.root.iter().map(|b| format!("{b:02x}")).collect::<String>(), "note": note}));
                } else {
                    print!("{note}");
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify { key, json } => {
                let verifier = verifier(config, key)?;
                let report = store::verify(&pool, &verifier, origin).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    match (report.checkpoint_size, report.root.as_deref()) {
                        (Some(size), Some(root)) => println!(
                            "{} records, {} signed checkpoints; the newest signs {size} records (root {root}), {} \
                             appended since",
                            report.records, report.checkpoints, report.unsigned
                        ),
                        _ => println!("{} records, no signed checkpoint", report.records),
                    }
                    for p in &report.problems {
                        println!("  FAIL {p}");
                    }
                    if report.checkpoint_size.is_none() {
                        println!("  no signed checkpoint yet: `tally audit checkpoint`");
                    }
                    println!("{}", if report.is_clean() { "ok: every checkpoint is a prefix of the log as it is" } else { "NOT VERIFIED" });
                }
                Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            AuditCommand::Prove { seq, json } => {
                let proof = store::prove(&pool, seq, &verifier(config, None)?).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&proof)?);
                } else {
                    println!("record {seq}: {}", proof.record);
                    println!("leaf hash {}", proof.leaf_hash);
                    println!("in the tree of {} records, root {}:", proof.size, proof.root);
                    for h in &proof.path {
                        println!("  {h}");
                    }
                    print!("{}", proof.checkpoint);
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Export { dir, json } => {
                let signer = signer(config)?;
                store::checkpoint(&pool, &signer, origin).await?;
                let verifier = NoteVerifier::parse(&signer.verifier_key())?;
                let exported = store::export(&pool, &dir, &verifier).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&exported)?);
                } else {
                    println!(
                        "exported {} records, the checkpoint of size {}{} to {}",
                        exported.records,
                        exported.size,
                        exported.previous.map(|p| format!(" and the consistency proof from size {p}")).unwrap_or_default(),
                        dir.display()
                    );
                    println!("an auditor checks it: cd {} && GO111MODULE=off GOPATH=/usr/share/gocode go run verify.go .", dir.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::List { limit } => {
                let all = store::records(&pool).await?;
                for r in all.iter().rev().take(limit) {
                    println!("{:>6}  {}", r.seq, String::from_utf8_lossy(&r.record));
                }
                println!("{} record(s)", all.len());
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
