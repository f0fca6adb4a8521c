//! Every counter ingest keeps, in one typed place. Rendered in the Prometheus text format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a delivery was not accepted. `as_str` is the stable `code` of the JSON error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    BodyTooLarge,
    PspNotConfigured,
    SignatureHeaderMissing,
    SignatureHeaderMalformed,
    SignatureSchemeMissing,
    SignatureMissing,
    SignatureMismatch,
    TimestampOutsideTolerance,
    MalformedJson,
    SchemaViolation,
    InvalidAmount,
    PanDetected,
    ClaimInProgress,
    BrokerUnavailable,
    DedupUnavailable,
    Internal,
}

impl RejectCode {
    pub const ALL: [RejectCode; 16] = [
        RejectCode::BodyTooLarge,
        RejectCode::PspNotConfigured,
        RejectCode::SignatureHeaderMissing,
        RejectCode::SignatureHeaderMalformed,
        RejectCode::SignatureSchemeMissing,
        RejectCode::SignatureMissing,
        RejectCode::SignatureMismatch,
        RejectCode::TimestampOutsideTolerance,
        RejectCode::MalformedJson,
        RejectCode::SchemaViolation,
        RejectCode::InvalidAmount,
        RejectCode::PanDetected,
        RejectCode::ClaimInProgress,
        RejectCode::BrokerUnavailable,
        RejectCode::DedupUnavailable,
        RejectCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::BodyTooLarge => "body_too_large",
            RejectCode::PspNotConfigured => "psp_not_configured",
            RejectCode::SignatureHeaderMissing => "signature_header_missing",
            RejectCode::SignatureHeaderMalformed => "signature_header_malformed",
            RejectCode::SignatureSchemeMissing => "signature_scheme_missing",
            RejectCode::SignatureMissing => "signature_missing",
            RejectCode::SignatureMismatch => "signature_mismatch",
            RejectCode::TimestampOutsideTolerance => "timestamp_outside_tolerance",
            RejectCode::MalformedJson => "malformed_json",
            RejectCode::SchemaViolation => "schema_violation",
            RejectCode::InvalidAmount => "invalid_amount",
            RejectCode::PanDetected => "pan_detected",
            RejectCode::ClaimInProgress => "claim_in_progress",
            RejectCode::BrokerUnavailable => "broker_unavailable",
            RejectCode::DedupUnavailable => "dedup_unavailable",
            RejectCode::Internal => "internal",
        }
    }

    /// Whether the PSP should retry: a 5xx or 409, never a 4xx that will fail the same way again.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            RejectCode::ClaimInProgress
                | RejectCode::BrokerUnavailable
                | RejectCode::DedupUnavailable
                | RejectCode::Internal
        )
    }
}

#[derive(Default)]
pub struct Metrics {
    pub deliveries_accepted: AtomicU64,
    pub deliveries_duplicate: AtomicU64,
    pub deliveries_ignored: AtomicU64,
    pub facts_produced: AtomicU64,
    pub facts_duplicate_at_edge: AtomicU64,
    pub facts_restated_earlier_at_edge: AtomicU64,
    pub facts_content_conflict_at_edge: AtomicU64,
    pub dedup_fallbacks_to_postgres: AtomicU64,
    pub confirm_failures: AtomicU64,
    pub quarantine_failures: AtomicU64,
    pub raw_produce_failures: AtomicU64,
    /// Notification items of a type not in the PSP's published list (acknowledged, kept in the raw topic).
    pub items_unknown_type: AtomicU64,
    /// Notification items of the other mode than the endpoint's (test at live, or live at test).
    pub items_other_mode: AtomicU64,
    /// Data-quality exceptions recorded at the edge (`edge_exceptions`).
    pub edge_exceptions: AtomicU64,
    pub edge_exception_failures: AtomicU64,
    rejections: [AtomicU64; RejectCode::ALL.len()],
}

impl Metrics {
    pub fn reject(&self, code: RejectCode) {
        self.rejections[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, code: RejectCode) -> u64 {
        self.rejections[code as usize].load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let plain = [
            ("tally_ingest_deliveries_accepted_total", &self.deliveries_accepted),
            ("tally_ingest_deliveries_duplicate_total", &self.deliveries_duplicate),
            ("tally_ingest_deliveries_ignored_total", &self.deliveries_ignored),
            ("tally_ingest_facts_produced_total", &self.facts_produced),
            ("tally_ingest_facts_duplicate_at_edge_total", &self.facts_duplicate_at_edge),
            ("tally_ingest_facts_restated_earlier_at_edge_total", &self.facts_restated_earlier_at_edge),
            ("tally_ingest_facts_content_conflict_at_edge_total", &self.facts_content_conflict_at_edge),
            ("tally_ingest_dedup_fallbacks_to_postgres_total", &self.dedup_fallbacks_to_postgres),
            ("tally_ingest_confirm_failures_total", &self.confirm_failures),
            ("tally_ingest_quarantine_failures_total", &self.quarantine_failures),
            ("tally_ingest_raw_produce_failures_total", &self.raw_produce_failures),
            ("tally_ingest_items_unknown_type_total", &self.items_unknown_type),
            ("tally_ingest_items_other_mode_total", &self.items_other_mode),
            ("tally_ingest_edge_exceptions_total", &self.edge_exceptions),
            ("tally_ingest_edge_exception_failures_total", &self.edge_exception_failures),
        ];
        for (name, v) in plain {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# TYPE tally_ingest_rejections_total counter");
        for code in RejectCode::ALL {
            let _ =
                writeln!(out, "tally_ingest_rejections_total{{code=\"{}\"}} {}", code.as_str(), self.rejections(code));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_indexed_in_order() {
        for (i, code) in RejectCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
        }
        let mut names: Vec<_> = RejectCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectCode::ALL.len());
        let m = Metrics::default();
        m.reject(RejectCode::PanDetected);
        assert!(m.render().contains("tally_ingest_rejections_total{code=\"pan_detected\"} 1"));
    }
}
