//! `tally webhook verify|normalize`: the same verification and normalisation code as ingest, for people debugging
//! a delivery. Exit codes: 0 valid / normalised, 1 signature invalid, 2 malformed input, PAN, or usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tally_domain::{Psp, Secret, Timestamp};
use tally_psp::{adyen, stripe, Outcome, SignatureError};

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Verify a delivery's signature over the raw body bytes.
    Verify(VerifyArgs),
    /// Normalise a body into canonical events (JSON lines), or say why it is ignored.
    Normalize(NormalizeArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    psp: Psp,
    /// Stripe: the endpoint's `whsec_…` secret. Adyen: the HMAC key in hex. Repeat for rotation (any may match).
    #[arg(long = "secret", env = "TALLY_WEBHOOK_SECRET", required = true, hide_env_values = true)]
    secrets: Vec<String>,
    /// Stripe: the `Stripe-Signature` header (required). Adyen: the `HmacSignature` header of a platform webhook;
    /// without it, every notification item's `additionalData.hmacSignature` is verified.
    #[arg(long)]
    signature: Option<String>,
    /// The raw body, byte for byte as received.
    #[arg(long)]
    body: PathBuf,
    /// Stripe: reject timestamps older than this (0 disables the check, as in the SDKs).
    #[arg(long, default_value_t = stripe::DEFAULT_TOLERANCE_SECS)]
    tolerance_secs: u64,
    /// Stripe: the current time as Unix seconds (default: now), to check a recorded delivery.
    #[arg(long)]
    now: Option<i64>,
}

#[derive(Args)]
pub struct NormalizeArgs {
    #[arg(long)]
    psp: Psp,
    #[arg(long)]
    body: PathBuf,
    /// When the delivery was received (RFC 3339; default: now).
    #[arg(long)]
    received_at: Option<String>,
    /// Normalise as a live endpoint would (default: a test-mode endpoint; the other mode is never booked).
    #[arg(long)]
    live: bool,
    /// An Adyen merchant account with immediate automatic capture (repeatable).
    #[arg(long, value_name = "MERCHANT_ACCOUNT")]
    immediate_capture: Vec<String>,
}

pub fn run(cmd: WebhookCommand) -> Result<ExitCode> {
    match cmd {
        WebhookCommand::Verify(args) => verify(args),
        WebhookCommand::Normalize(args) => normalize(args),
    }
}

fn read_body(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let body = read_body(&args.body)?;
    let verdict: Result<(), SignatureError> = match args.psp {
        Psp::Stripe => {
            let Some(header) = args.signature.as_deref() else {
                bail!("--signature is required for Stripe (the Stripe-Signature header)");
            };
            let secrets: Vec<Secret<String>> = args.secrets.into_iter().map(Secret::new).collect();
            let tolerance = stripe::Tolerance::Secs(args.tolerance_secs);
            stripe::verify(&body, header, &secrets, args.now.unwrap_or_else(now_unix), tolerance).map(|_| ())
        }
        Psp::Adyen => {
            let keys = args.secrets.iter().map(|k| adyen::HmacKey::from_hex(k)).collect::<Result<Vec<_>, _>>();
            match (keys, args.signature.as_deref()) {
                (Err(e), _) => Err(e),
                (Ok(keys), Some(sig)) => adyen::verify_payload(&body, sig, &keys),
                (Ok(keys), None) => adyen::verify_notification(&body, &keys).map(|_| ()),
            }
        }
    };
    match verdict {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (SignatureError::InvalidSecret(_) | SignatureError::MalformedBody(_))) => {
            bail!("{e} [{}]", e.code())
        }
        Err(e) => {
            println!("invalid: {e} [{}]", e.code());
            Ok(ExitCode::from(1))
        }
    }
}

fn normalize(args: NormalizeArgs) -> Result<ExitCode> {
    let body = read_body(&args.body)?;
    let received_at = match args.received_at.as_deref() {
        Some(s) => Timestamp::parse_rfc3339(s)?,
        None => Timestamp::from_unix_secs(now_unix())?,
    };
    let endpoint = tally_psp::Endpoint {
        live: args.live,
        adyen_capture: tally_psp::CaptureModes {
            default: tally_psp::CaptureMode::Delayed,
            accounts: args.immediate_capture.into_iter().map(|a| (a, tally_psp::CaptureMode::Immediate)).collect(),
        },
    };
    let outcomes = tally_psp::normalize(args.psp, &body, received_at, &endpoint)
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
    for outcome in outcomes {
        let line = match outcome {
            Outcome::Events(events) => {
                for event in events {
                    let mut json = serde_json::to_value(&event)?;
                    json["fact_key"] = event.fact_key().to_string().into();
                    println!("{json}");
                }
                continue;
            }
            Outcome::Ignored { event_type, reason } => {
                serde_json::json!({ "ignored": { "event_type": event_type, "reason": reason } })
            }
            Outcome::Unknown { event_type } => serde_json::json!({ "unknown_event_type": event_type }),
            Outcome::OtherMode { event_type, live } => {
                serde_json::json!({ "other_mode": { "event_type": event_type, "live": live } })
            }
            Outcome::Exception { event_type, reason } => {
                serde_json::json!({ "exception": { "event_type": event_type, "reason": reason } })
            }
        };
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
