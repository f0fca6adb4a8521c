//! `tally backfill raw` (issue 16 §4): the PSP bytes of deliveries Tally acknowledged (without booking — a type it
//! did not know yet, an item it ignored, an exception it recorded — or booking some of their items and keeping the
//! others for replay) read back from the archive's copy of
//! `webhooks.raw.v1` (the broker's retention is shorter), normalised again with the current code, and their facts
//! produced to the lifecycle topics as ingest produces them. Fact keys are deterministic: a fact the ledger booked
//! already is not produced (counted), and one produced twice by two backfills is one booking (the sinks keep a
//! fact once). Signatures are not checked again: a delivery is acknowledged only after its signature verified, and
//! a body marked redacted (it held a card number) is never normalised.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Pool;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tally_archive::objects::Objects;
use tally_contracts::{encode_payment_event, Verdict};
use tally_domain::{PaymentEvent, Psp};
use tally_kafka::{topic_for, Header, KafkaConfig, Producer};
use tally_psp::{Endpoint, Outcome};

use crate::scope::Scope;
use crate::ReplayError;

/// What the deliveries are re-normalised for.
pub struct Backfill<'a> {
    /// Facts outside it are not produced; its PSP also selects the deliveries.
    pub scope: &'a Scope,
    /// Only deliveries acknowledged without booking, with one of these codes (`unknown_event_type`, `not_booked`,
    /// `exception_recorded`, `other_mode`); empty: every acknowledged delivery (an accepted one may hold items of a
    /// type Tally did not know; its booked facts are found booked and not produced).
    pub codes: &'a [String],
    pub stripe: &'a Endpoint,
    pub adyen: &'a Endpoint,
    /// Count what would be produced; produce nothing.
    pub dry_run: bool,
}

/// What a backfill found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Raw deliveries read from the archive.
    pub raw_records: u64,
    /// Acknowledged deliveries of the PSP and codes asked for.
    pub deliveries: u64,
    /// Items the current code still does not book, by outcome (`unknown`, `ignored`, `other_mode`, `exception`).
    pub still_not_booked: BTreeMap<String, u64>,
    /// Deliveries the current code refuses (a reason each, the delivery id first); never produced.
    pub refused: Vec<String>,
    /// Facts in scope the deliveries state now (distinct fact keys).
    pub facts: u64,
    /// Of them, booked by the ledger already: not produced.
    pub already_booked: u64,
    /// Produced to the lifecycle topics (0 on a dry run).
    pub produced: u64,
    /// SHA-256 over the sorted fact keys produced (or, on a dry run, that would be).
    pub fact_keys_checksum: String,
    pub dry_run: bool,
    /// Why producing stopped part way (then `produced` says how far it got; the rest is produced by running the
    /// backfill again).
    pub error: Option<String>,
}

/// Runs a backfill; `progress(files done, files)` after each archive file.
pub async fn raw(
    pool: &Pool,
    objects: &Objects,
    kafka: &KafkaConfig,
    backfill: &Backfill<'_>,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Report, ReplayError> {
    let raw_topic = kafka.topic("webhooks.raw.v1");
    let files: Vec<_> =
        tally_archive::manifest::list_files(pool).await?.into_iter().filter(|f| f.topic == raw_topic).collect();
    let mut report = Report { dry_run: backfill.dry_run, ..Report::default() };
    // Per fact key, its earliest statement and the delivery that made it (I4: the sinks date a fact by it).
    let mut facts: BTreeMap<uuid::Uuid, (PaymentEvent, String)> = BTreeMap::new();
    let total = files.len() as u64;
    for (done, f) in files.iter().enumerate() {
        let bytes = objects.get(&f.path).await?;
        let records = tokio::task::spawn_blocking(move || tally_archive::file::read_records(bytes))
            .await
            .map_err(|e| ReplayError::Archive(format!("reading {}: {e}", f.path)))??;
        for r in records {
            let Some(value) = r.value.as_deref() else { continue };
            report.raw_records += 1;
            let Ok(d) = tally_contracts::decode_raw_delivery(value) else {
                report.refused.push(format!("{}[{}]@{}: not a raw delivery record", r.topic, r.partition, r.offset));
                continue;
            };
            let Ok(psp) = d.psp.parse::<Psp>() else { continue };
            let code = d.code.clone().unwrap_or_default();
            let acknowledged = match d.verdict {
                Verdict::Ignored => backfill.codes.is_empty() || backfill.codes.contains(&code),
                Verdict::Accepted | Verdict::Duplicate => backfill.codes.is_empty(),
                Verdict::Rejected => false,
            };
            if !acknowledged || backfill.scope.psp.is_some_and(|p| p != psp) {
                continue;
            }
            report.deliveries += 1;
            if d.redacted {
                report.refused.push(format!("{}: its body was redacted (it held a card number)", d.delivery_id));
                continue;
            }
            let endpoint = match psp {
                Psp::Stripe => backfill.stripe,
                Psp::Adyen => backfill.adyen,
            };
            let outcomes = match tally_psp::normalize(psp, &d.body, d.received_at, endpoint) {
                Ok(o) => o,
                Err(e) => {
                    report.refused.push(format!("{}: {e}", d.delivery_id));
                    continue;
                }
            };
            for outcome in outcomes {
                let not_booked = match outcome {
                    Outcome::Events(events) => {
                        for e in events.into_iter().filter(|e| backfill.scope.contains(e)) {
                            let key = e.fact_key().0;
                            match facts.get(&key) {
                                Some((kept, _)) if kept.occurred_at <= e.occurred_at => {}
                                _ => {
                                    facts.insert(key, (e, d.delivery_id.clone()));
                                }
                            }
                        }
                        continue;
                    }
                    Outcome::Ignored { .. } => "ignored",
                    Outcome::Unknown { .. } => "unknown",
                    Outcome::OtherMode { .. } => "other_mode",
                    Outcome::Exception { .. } => "exception",
                };
                *report.still_not_booked.entry(not_booked.to_owned()).or_default() += 1;
            }
        }
        progress(done as u64 + 1, total);
    }
    report.facts = facts.len() as u64;
    let keys: Vec<uuid::Uuid> = facts.keys().copied().collect();
    let booked: BTreeSet<uuid::Uuid> = pool
        .get()
        .await?
        .query("SELECT fact_key FROM event_log WHERE fact_key = ANY($1)", &[&keys])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    report.already_booked = booked.len() as u64;
    let to_produce: Vec<&(PaymentEvent, String)> =
        facts.iter().filter(|(k, _)| !booked.contains(k)).map(|(_, v)| v).collect();
    let mut checksum = Sha256::new();
    for (e, _) in &to_produce {
        checksum.update(format!("{}\n", e.fact_key().0).as_bytes());
    }
    report.fact_keys_checksum = hex::encode(checksum.finalize());
    if !backfill.dry_run && !to_produce.is_empty() {
        let producer = Producer::new(kafka).map_err(|e| ReplayError::Archive(format!("producer: {e}")))?;
        for (e, delivery) in &to_produce {
            let key = e.fact_key().0.to_string();
            let value = match encode_payment_event(e, Some(delivery)) {
                Ok(v) => v,
                Err(err) => {
                    report.error = Some(format!("encoding {key}: {err}"));
                    break;
                }
            };
            let headers = [
                Header { key: "fact_key", value: key.as_bytes() },
                Header { key: "delivery_id", value: delivery.as_bytes() },
            ];
            let topic = kafka.topic(topic_for(e.kind));
            if let Err(err) = producer.send(&topic, e.payment_id.as_bytes(), &value, &headers).await {
                report.error = Some(format!("producing {key}: {err}"));
                break;
            }
            report.produced += 1;
        }
    }
    Ok(report)
}

/// The backfill's audit record (I8).
pub async fn audit(
    pool: &Pool,
    scope: &Scope,
    codes: &[String],
    report: &Report,
    actor: &str,
) -> Result<u64, ReplayError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let entry = tally_audit::Entry {
        actor: actor.to_owned(),
        action: match (report.dry_run, &report.error) {
            (true, _) => "backfill.raw.dry_run",
            (false, None) => "backfill.raw",
            (false, Some(_)) => "backfill.raw.failed",
        }
        .into(),
        subject: Some("webhooks.raw.v1".into()),
        scope: Some(serde_json::json!({ "scope": scope, "codes": codes })),
        after: Some(report.fact_keys_checksum.clone()),
        detail: Some(serde_json::json!({
            "raw_records": report.raw_records,
            "deliveries": report.deliveries,
            "facts": report.facts,
            "already_booked": report.already_booked,
            "produced": report.produced,
            "refused": report.refused.len(),
            "still_not_booked": report.still_not_booked,
            "error": report.error,
        })),
        ..tally_audit::Entry::default()
    };
    let seq = tally_audit::append(&tx, &entry).await?;
    tx.commit().await?;
    Ok(seq)
}
