//! One delivery, start to verdict. The order is the contract of issue 3 and DESIGN §2: signature → PAN scan →
//! normalise → encode → claim → produce → confirm. Nothing is produced to a lifecycle topic unless every earlier step
//! passed, and a 2xx is only ever answered after every record of the delivery is durable.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use futures::future::join_all;
use sha2::{Digest, Sha256};
use tally_contracts::{encode_payment_event, encode_raw_delivery, RawDelivery, Verdict};
use tally_domain::edge::Produced;
use tally_domain::{pan, ContentDigest, FactKey, PaymentEvent, Psp, Secret, Timestamp};
use tally_kafka::{topic_for, Header, RAW_TOPIC};
use tally_psp::{adyen, stripe, NormalizeError, Outcome, SignatureError};
use uuid::Uuid;

use crate::dedup::{Claim, Done, OwnedClaim};
use crate::{Ingest, Metrics, RejectCode};

/// Headers worth keeping with the raw bytes (lineage and forensics). Never a credential of ours.
const KEPT_HEADERS: &[&str] = &["content-type", "user-agent", "stripe-signature", "hmacsignature"];

/// Headers that are a function of the original bytes (a PSP's HMAC over the body): kept only when the body is kept
/// as it came. Beside a redacted body they would let the card number be brute-forced back (I7, PCI DSS 3.5).
const BODY_DERIVED_HEADERS: &[&str] = &["stripe-signature", "hmacsignature"];

/// The raw-topic record of a delivery. For a body with a card number, everything stored is derived from the
/// *redacted* bytes only: the body, its digest, and no header computed over the original. A digest of the original
/// beside its redaction (last four digits and the layout kept) would give the number away to a brute force over
/// the few unknown digits that pass Luhn.
pub(crate) fn raw_record(
    psp: Psp,
    delivery_id: Uuid,
    received_at: Timestamp,
    headers: &HeaderMap,
    body: &[u8],
    pans: &[pan::PanMatch],
) -> RawDelivery {
    let redacted = !pans.is_empty();
    let stored = if redacted { tally_psp::redact_pans(body) } else { body.to_vec() };
    RawDelivery {
        delivery_id: delivery_id.to_string(),
        psp: psp.as_str().to_owned(),
        received_at,
        headers: KEPT_HEADERS
            .iter()
            .filter(|h| !(redacted && BODY_DERIVED_HEADERS.contains(h)))
            .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(|v| ((*h).to_owned(), v.to_owned())))
            .collect(),
        body_sha256: hex::encode(Sha256::digest(&stored)),
        body: stored,
        redacted,
        verdict: Verdict::Rejected,
        code: None,
        fact_keys: Vec::new(),
    }
}

/// What ingest answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `duplicates` counts every fact produced already; `conflicts` those of them that came with other content.
    Accepted {
        delivery_id: Uuid,
        facts: usize,
        duplicates: usize,
        conflicts: usize,
    },
    Ignored {
        delivery_id: Uuid,
        code: &'static str,
        reasons: Vec<String>,
    },
    Rejected {
        code: RejectCode,
        message: String,
    },
}

struct Rejection(RejectCode, String);

impl Rejection {
    fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Rejection(code, message.into())
    }
}

fn signature_code(e: &SignatureError) -> RejectCode {
    match e {
        SignatureError::NoSecretConfigured => RejectCode::PspNotConfigured,
        SignatureError::InvalidSecret(_) => RejectCode::Internal,
        SignatureError::MalformedHeader => RejectCode::SignatureHeaderMalformed,
        SignatureError::NoSignatureWithScheme => RejectCode::SignatureSchemeMissing,
        SignatureError::NoMatch | SignatureError::ItemMismatch { .. } => RejectCode::SignatureMismatch,
        SignatureError::OutsideTolerance { .. } => RejectCode::TimestampOutsideTolerance,
        SignatureError::MissingSignature { .. } => RejectCode::SignatureMissing,
        SignatureError::MalformedBody(_) => RejectCode::MalformedJson,
    }
}

pub(crate) fn now() -> Timestamp {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    Timestamp::from_unix_micros(micros).expect("the system clock is between years 1 and 9999")
}

/// A fact ready to produce.
struct Encoded {
    key: FactKey,
    content: ContentDigest,
    occurred_at: Timestamp,
    topic: String,
    payment_id: String,
    value: Vec<u8>,
    /// Its position among the delivery's events.
    event: usize,
}

impl Encoded {
    /// What a claim on this fact keeps once this delivery produced it.
    fn produced(&self, delivery_id: Uuid) -> Produced {
        Produced { content: self.content, delivery_id, occurred_at: Some(self.occurred_at) }
    }
}

/// A fact whose key was produced already (by an earlier delivery, or earlier in this one) with other content.
struct Conflict {
    key: FactKey,
    /// The incoming version: its position among the delivery's events, and its content.
    event: usize,
    content: ContentDigest,
    /// The version produced first, and its event when it is in this delivery.
    produced: Produced,
    produced_event: Option<usize>,
}

impl Ingest {
    pub(crate) async fn handle(&self, psp: Psp, headers: &HeaderMap, body: &[u8]) -> Reply {
        let received_at = now();
        let delivery_id = crate::random_uuid();
        // The one PAN scan of the delivery: its matches redact what is stored, its clean body is what is normalised.
        let scanned = tally_psp::pan_free(body);
        let pans = scanned.as_ref().err().map_or(&[][..], Vec::as_slice);
        let mut raw = raw_record(psp, delivery_id, received_at, headers, body, pans);
        let reply = match self.process(psp, headers, body, &scanned, received_at, &mut raw).await {
            Ok(reply) => reply,
            Err(Rejection(code, message)) => {
                self.metrics.reject(code);
                if code == RejectCode::PanDetected {
                    self.quarantine(&raw, &message).await;
                }
                Reply::Rejected { code, message }
            }
        };
        match &reply {
            // Produced together with the lifecycle records, before the reply.
            Reply::Accepted { facts, .. } if *facts > 0 => {}
            Reply::Accepted { .. } => {
                raw.verdict = Verdict::Duplicate;
                self.produce_raw_best_effort(&raw).await;
            }
            Reply::Ignored { code, .. } => {
                raw.verdict = Verdict::Ignored;
                raw.code = Some((*code).to_owned());
                // The raw topic is the only copy of an acknowledged-but-ignored delivery (kept for replay once
                // Tally books its type): no 2xx unless it is durable.
                if !self.produce_raw_best_effort(&raw).await {
                    self.metrics.reject(RejectCode::BrokerUnavailable);
                    return Reply::Rejected {
                        code: RejectCode::BrokerUnavailable,
                        message: "the delivery could not be archived; retry".into(),
                    };
                }
            }
            Reply::Rejected { code, .. } => {
                raw.code = Some(code.as_str().to_owned());
                // When the broker is down there is nothing to write the rejection to.
                if *code != RejectCode::BrokerUnavailable {
                    self.produce_raw_best_effort(&raw).await;
                }
            }
        }
        reply
    }

    async fn process(
        &self,
        psp: Psp,
        headers: &HeaderMap,
        body: &[u8],
        scanned: &Result<tally_psp::PanFree<'_>, Vec<pan::PanMatch>>,
        received_at: Timestamp,
        raw: &mut RawDelivery,
    ) -> Result<Reply, Rejection> {
        let delivery_id: Uuid = raw.delivery_id.parse().expect("we made it");
        self.verify(psp, headers, body, received_at)?;
        let clean = match scanned {
            Ok(clean) => *clean,
            Err(pans) => {
                let networks: Vec<&str> = pans.iter().map(|m| m.network).collect();
                return Err(Rejection::new(
                    RejectCode::PanDetected,
                    format!("body contains {} card number(s) ({networks:?}); quarantined redacted", pans.len()),
                ));
            }
        };
        let endpoint = match psp {
            Psp::Stripe => &self.stripe_endpoint,
            Psp::Adyen => &self.adyen_endpoint,
        };
        // The PSP's mapping, then the ledger's own bookability rule on every fact: a fact the ledger would refuse
        // is refused here, before the 2xx, while the PSP can still fix and resend it.
        let outcomes = tally_psp::normalize_scanned(psp, clean, received_at, endpoint).map_err(|e| {
            let code = match e {
                NormalizeError::MalformedJson(_) => RejectCode::MalformedJson,
                NormalizeError::Money(_) | NormalizeError::NotBookable { .. } => RejectCode::InvalidAmount,
                NormalizeError::PanDetected { .. } => RejectCode::PanDetected,
                NormalizeError::Schema { .. } => RejectCode::SchemaViolation,
            };
            Rejection::new(code, e.to_string())
        })?;
        // Each item on its own: an unknown, other-mode or unmappable item is counted or recorded, and never takes
        // the delivery's bookable items with it.
        let mut events: Vec<PaymentEvent> = Vec::new();
        let mut reasons = Vec::new();
        let mut exceptions = Vec::new();
        let (mut unknown, mut other_mode) = (0u64, 0u64);
        for (item, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Events(e) => events.extend(e),
                Outcome::Ignored { event_type, reason } => reasons.push(format!("{event_type}: {reason}")),
                Outcome::Unknown { event_type } => {
                    unknown += 1;
                    reasons.push(format!("{event_type}: unknown event type (kept for replay)"));
                }
                Outcome::OtherMode { event_type, live } => {
                    other_mode += 1;
                    let mode = if live { "live" } else { "test" };
                    reasons.push(format!(
                        "{event_type}: a {mode}-mode notification at a {} endpoint: not booked",
                        if endpoint.live { "live" } else { "test" }
                    ));
                }
                Outcome::Exception { event_type, reason } => {
                    reasons.push(format!("{event_type}: recorded for review: {reason}"));
                    exceptions.push((item as i32, event_type, reason));
                }
            }
        }
        Metrics::add(&self.metrics.items_unknown_type, unknown);
        Metrics::add(&self.metrics.items_other_mode, other_mode);
        // An exception is acknowledged only once it is recorded: otherwise the PSP retries and nothing is lost.
        if !exceptions.is_empty() {
            let rows: Vec<_> = exceptions
                .iter()
                .map(|(item, event_type, reason)| tally_postgres::EdgeException {
                    kind: "unmapped",
                    delivery_id,
                    psp: psp.as_str(),
                    item: *item,
                    event_type,
                    fact_key: None,
                    detail: serde_json::json!({ "reason": reason }),
                })
                .collect();
            if let Err(e) = tally_postgres::record_edge_exceptions(&self.pool, &rows).await {
                Metrics::add(&self.metrics.edge_exception_failures, 1);
                return Err(Rejection::new(RejectCode::Internal, format!("exception not recorded, retry: {e}")));
            }
            Metrics::add(&self.metrics.edge_exceptions, rows.len() as u64);
        }
        if events.is_empty() {
            Metrics::add(&self.metrics.deliveries_ignored, 1);
            let code = if !exceptions.is_empty() {
                "exception_recorded"
            } else if other_mode > 0 {
                "other_mode"
            } else if unknown > 0 {
                "unknown_event_type"
            } else {
                "not_booked"
            };
            return Ok(Reply::Ignored { delivery_id, code, reasons });
        }
        let (encoded, mut conflicts) = self.encode(&events, delivery_id)?;
        raw.fact_keys = encoded.iter().map(|e| e.key.to_string()).collect();
        let (owned, done) = self.claim_all(&encoded, delivery_id).await?;
        // A fact produced already, stated now with the same content and an earlier event time: produced again (its
        // claim then moves here), since the sinks date a fact by its earliest statement (I4) and a restatement
        // that overtook it must not date it. Any other done fact is a duplicate.
        let (restated, done): (Vec<_>, Vec<_>) = done.into_iter().partition(|(i, d)| {
            d.produced.is_some_and(|p| p.restated_earlier_by(encoded[*i].content, encoded[*i].occurred_at))
        });
        let duplicates = done.len();
        Metrics::add(&self.metrics.facts_duplicate_at_edge, duplicates as u64);
        // A fact produced already with other content: still a duplicate (the ledger keeps its first booking), but
        // recorded with both deliveries before the 2xx, never passed as the same fact.
        for (i, d) in &done {
            let e = &encoded[*i];
            if let Some(p) = d.produced.filter(|p| p.content != e.content) {
                conflicts.push(Conflict {
                    key: e.key,
                    event: e.event,
                    content: e.content,
                    produced: p,
                    produced_event: None,
                });
            }
        }
        if owned.is_empty() && restated.is_empty() {
            self.record_conflicts(psp, delivery_id, &events, &conflicts, &owned).await?;
            Metrics::add(&self.metrics.deliveries_duplicate, 1);
            return Ok(Reply::Accepted { delivery_id, facts: 0, duplicates, conflicts: conflicts.len() });
        }
        raw.verdict = Verdict::Accepted;
        let produce: Vec<FactKey> =
            owned.iter().map(|c| c.key).chain(restated.iter().map(|(i, _)| encoded[*i].key)).collect();
        if let Err(e) = self.produce_all(&encoded, &produce, raw).await {
            for claim in &owned {
                self.dedup.release(claim).await;
            }
            return Err(Rejection::new(RejectCode::BrokerUnavailable, format!("not durable, retry: {e}")));
        }
        // After the produce, so that a row never names a delivery whose bytes did not reach the raw topic.
        self.record_conflicts(psp, delivery_id, &events, &conflicts, &owned).await?;
        let conflicts = conflicts.len();
        let ttl = Duration::from_secs(match psp {
            Psp::Stripe => self.config.stripe.dedup_ttl_secs,
            Psp::Adyen => self.config.adyen.dedup_ttl_secs,
        });
        let confirmed = join_all(owned.iter().map(|c| self.dedup.confirm(c, ttl))).await;
        Metrics::add(&self.metrics.confirm_failures, confirmed.iter().filter(|ok| !**ok).count() as u64);
        // Counted when produced: the claim's move can lose to a still earlier statement, which is fine.
        join_all(restated.iter().map(|(i, d)| {
            let e = &encoded[*i];
            self.dedup.restate(e.key, d, e.produced(delivery_id), ttl)
        }))
        .await;
        Metrics::add(&self.metrics.facts_restated_earlier_at_edge, restated.len() as u64);
        Metrics::add(&self.metrics.facts_produced, produce.len() as u64);
        Metrics::add(&self.metrics.deliveries_accepted, 1);
        Ok(Reply::Accepted { delivery_id, facts: produce.len(), duplicates, conflicts })
    }

    /// One `content_conflict` row per conflicting fact in `edge_exceptions`: what was produced (delivery and content
    /// digest, and the event itself when it came in this delivery) beside what came now.
    /// On failure the delivery's claims are released and it gets a 500: the PSP retries, nothing is lost.
    async fn record_conflicts(
        &self,
        psp: Psp,
        delivery_id: Uuid,
        events: &[PaymentEvent],
        conflicts: &[Conflict],
        owned: &[OwnedClaim],
    ) -> Result<(), Rejection> {
        if conflicts.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = conflicts
            .iter()
            .map(|c| {
                tally_postgres::EdgeException {
                    kind: "content_conflict",
                    delivery_id,
                    psp: psp.as_str(),
                    item: c.event as i32,
                    event_type: events[c.event].kind.as_str(),
                    fact_key: Some(c.key.0),
                    detail: serde_json::json!({
                        "reason": "a fact produced already was delivered again with other content (amount, fee, currency, payment or merchant); the first version stands",
                        "produced": {
                            "delivery_id": c.produced.delivery_id,
                            "content_digest": c.produced.content.to_string(),
                            "event": c.produced_event.map(|i| &events[i]),
                        },
                        "incoming": { "delivery_id": delivery_id, "content_digest": c.content.to_string(), "event": &events[c.event] },
                    }),
                }
            })
            .collect();
        if let Err(e) = tally_postgres::record_edge_exceptions(&self.pool, &rows).await {
            for claim in owned {
                self.dedup.release(claim).await;
            }
            Metrics::add(&self.metrics.edge_exception_failures, 1);
            return Err(Rejection::new(RejectCode::Internal, format!("content conflict not recorded, retry: {e}")));
        }
        Metrics::add(&self.metrics.facts_content_conflict_at_edge, rows.len() as u64);
        Metrics::add(&self.metrics.edge_exceptions, rows.len() as u64);
        Ok(())
    }

    fn verify(&self, psp: Psp, headers: &HeaderMap, body: &[u8], received_at: Timestamp) -> Result<(), Rejection> {
        let result = match psp {
            Psp::Stripe => {
                let Some(header) = headers.get("stripe-signature").and_then(|v| v.to_str().ok()) else {
                    return Err(Rejection::new(
                        RejectCode::SignatureHeaderMissing,
                        "Stripe-Signature header is missing",
                    ));
                };
                let secrets: &[Secret<String>] = &self.config.stripe.secrets;
                let tolerance = stripe::Tolerance::Secs(self.config.stripe.tolerance_secs);
                stripe::verify(body, header, secrets, received_at.unix_secs(), tolerance).map(|_| ())
            }
            Psp::Adyen => adyen::verify_notification(body, &self.adyen_keys).map(|_| ()),
        };
        result.map_err(|e| Rejection::new(signature_code(&e), e.to_string()))
    }

    /// The delivery's facts, encoded, each fact key once — and the facts this delivery states twice with different
    /// content (the second is not produced; it is a conflict with the first).
    fn encode(&self, events: &[PaymentEvent], delivery_id: Uuid) -> Result<(Vec<Encoded>, Vec<Conflict>), Rejection> {
        let id = delivery_id.to_string();
        let mut out: Vec<Encoded> = Vec::with_capacity(events.len());
        let mut conflicts = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let key = event.fact_key();
            let content = event.content_digest();
            // One delivery may state a fact twice (a refund listed twice): produce it once, at its earliest
            // statement (I4: the sinks date a fact by it).
            if let Some(first) = out.iter_mut().find(|e| e.key == key) {
                if first.content == content && event.occurred_at < first.occurred_at {
                    first.value = encode_payment_event(event, Some(&id))
                        .map_err(|e| Rejection::new(RejectCode::Internal, format!("encoding {key}: {e}")))?;
                    (first.occurred_at, first.event) = (event.occurred_at, index);
                } else if first.content != content {
                    conflicts.push(Conflict {
                        key,
                        event: index,
                        content,
                        produced: Produced {
                            content: first.content,
                            delivery_id,
                            occurred_at: Some(first.occurred_at),
                        },
                        produced_event: Some(first.event),
                    });
                }
                continue;
            }
            let value = encode_payment_event(event, Some(&id))
                .map_err(|e| Rejection::new(RejectCode::Internal, format!("encoding {key}: {e}")))?;
            out.push(Encoded {
                key,
                content,
                occurred_at: event.occurred_at,
                topic: self.kafka.topic(topic_for(event.kind)),
                payment_id: event.payment_id.clone(),
                value,
                event: index,
            });
        }
        Ok((out, conflicts))
    }

    /// Claims every fact key. Returns the claims this delivery owns and the facts already done (their position in
    /// `encoded`, and what was produced for them).
    #[allow(clippy::type_complexity)]
    async fn claim_all(
        &self,
        encoded: &[Encoded],
        delivery_id: Uuid,
    ) -> Result<(Vec<OwnedClaim>, Vec<(usize, Done)>), Rejection> {
        let lease = Duration::from_millis(self.config.claim_lease_ms);
        let claims = join_all(encoded.iter().map(|e| self.dedup.claim(e.key, e.produced(delivery_id), lease))).await;
        let (mut owned, mut done, mut busy, mut failure) = (Vec::new(), Vec::new(), false, None);
        for (i, claim) in claims.into_iter().enumerate() {
            match claim {
                Ok(Claim::Owned(c)) => owned.push(c),
                Ok(Claim::Done(d)) => done.push((i, d)),
                Ok(Claim::Processing) => busy = true,
                Err(e) => failure = Some(e),
            }
        }
        if busy || failure.is_some() {
            for c in &owned {
                self.dedup.release(c).await;
            }
            return Err(match failure {
                Some(e) => Rejection::new(RejectCode::DedupUnavailable, e.to_string()),
                None => Rejection::new(RejectCode::ClaimInProgress, "the same fact is being processed; retry shortly"),
            });
        }
        Ok((owned, done))
    }

    /// Produces the owned facts and the raw delivery concurrently; succeeds only if every record is durable.
    async fn produce_all(&self, encoded: &[Encoded], produce: &[FactKey], raw: &RawDelivery) -> Result<(), String> {
        let raw_value = encode_raw_delivery(raw).map_err(|e| e.to_string())?;
        let raw_topic = self.kafka.topic(RAW_TOPIC);
        let delivery = raw.delivery_id.as_bytes();
        let facts = encoded.iter().filter(|e| produce.contains(&e.key)).map(|e| {
            let key = e.key.to_string();
            async move {
                let headers =
                    [Header { key: "fact_key", value: key.as_bytes() }, Header { key: "delivery_id", value: delivery }];
                self.producer.send(&e.topic, e.payment_id.as_bytes(), &e.value, &headers).await
            }
        });
        let raw_send = self.producer.send(&raw_topic, delivery, &raw_value, &[]);
        let (raw_result, fact_results) = futures::join!(raw_send, join_all(facts));
        raw_result.map_err(|e| format!("raw delivery: {e}"))?;
        for r in fact_results {
            r.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// True when the raw record is durable.
    async fn produce_raw_best_effort(&self, raw: &RawDelivery) -> bool {
        let result = match encode_raw_delivery(raw) {
            Ok(value) => {
                let topic = self.kafka.topic(RAW_TOPIC);
                self.producer
                    .send(&topic, raw.delivery_id.as_bytes(), &value, &[])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                Metrics::add(&self.metrics.raw_produce_failures, 1);
                tracing::warn!(delivery_id = %raw.delivery_id, verdict = raw.verdict.as_str(), error = %e, "raw delivery not archived");
                false
            }
        }
    }

    async fn quarantine(&self, raw: &RawDelivery, detail: &str) {
        let headers: BTreeMap<&str, &str> = raw.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let record = tally_postgres::QuarantineRecord {
            delivery_id: raw.delivery_id.parse().expect("we made it"),
            psp: &raw.psp,
            received_at_micros: raw.received_at.unix_micros(),
            reason: RejectCode::PanDetected.as_str(),
            detail,
            headers: serde_json::to_value(headers).unwrap_or_default(),
            redacted_body: &raw.body,
            body_sha256: &raw.body_sha256,
        };
        if let Err(e) = tally_postgres::quarantine(&self.pool, &record).await {
            Metrics::add(&self.metrics.quarantine_failures, 1);
            // The redacted record still reaches the raw topic; the body is never logged.
            tracing::error!(delivery_id = %raw.delivery_id, error = %e, "quarantine insert failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAN: &str = "4242424242424242";

    fn body(pan: &str) -> Vec<u8> {
        format!(r#"{{"id":"evt_1","type":"charge.succeeded","data":{{"object":{{"description":"card {pan}"}}}}}}"#)
            .into_bytes()
    }

    /// Every card number an attacker who knows all but three middle digits would try (the redaction keeps the
    /// last four; here the attacker is also handed the first nine).
    fn candidates() -> impl Iterator<Item = String> {
        (0..1000)
            .map(|d| format!("{}{d:03}{}", &PAN[..9], &PAN[12..]))
            .filter(|c| pan::luhn_valid(&c.bytes().map(|b| b - b'0').collect::<Vec<_>>()))
    }

    #[test]
    fn a_redacted_delivery_stores_nothing_that_a_brute_force_turns_back_into_the_card_number() {
        let original = body(PAN);
        let pans = tally_psp::scan_for_pans(&original);
        assert_eq!(pans.len(), 1);
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", "t=1,v1=00ff".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let raw =
            raw_record(Psp::Stripe, Uuid::nil(), Timestamp::from_unix_secs(1).unwrap(), &headers, &original, &pans);
        assert!(raw.redacted);
        assert!(!String::from_utf8_lossy(&raw.body).contains(PAN));
        // No header computed over the original bytes is kept beside the redaction.
        assert_eq!(raw.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["content-type"]);
        // The digest is of what is stored, so it reveals nothing the stored body does not.
        assert_eq!(raw.body_sha256, hex::encode(Sha256::digest(&raw.body)));

        let hits =
            |digest: &str| candidates().filter(|c| hex::encode(Sha256::digest(body(c))) == digest).collect::<Vec<_>>();
        assert!(hits(&raw.body_sha256).is_empty(), "the stored digest gives the card number away");
        // The control: the same search against a digest of the original (what Tally stored before) finds it, so
        // the search above is a real one.
        assert_eq!(hits(&hex::encode(Sha256::digest(&original))), vec![PAN.to_owned()]);
    }

    #[test]
    fn a_clean_delivery_keeps_its_bytes_and_signature() {
        let original = br#"{"id":"evt_1"}"#;
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", "t=1,v1=00ff".parse().unwrap());
        let raw = raw_record(Psp::Stripe, Uuid::nil(), Timestamp::from_unix_secs(1).unwrap(), &headers, original, &[]);
        assert!(!raw.redacted);
        assert_eq!(raw.body, original);
        assert_eq!(raw.body_sha256, hex::encode(Sha256::digest(original)));
        assert_eq!(raw.headers.len(), 1);
    }
}
