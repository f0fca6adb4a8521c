//! A replay's scope (issue 16 §1): merchants × an event-time range (UTC, half-open) × kinds × a PSP, any
//! combination; and what it resolved to — the exact archived records, with their count and checksum.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_domain::{EventKind, FactKey, PaymentEvent, Psp, Timestamp};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Empty: every merchant.
    pub merchants: Vec<String>,
    /// Event time (`occurred_at`) at or after this.
    pub from: Option<Timestamp>,
    /// Event time before this.
    pub to: Option<Timestamp>,
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
    pub psp: Option<Psp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("--from {from} is not before --to {to}")]
    EmptyRange { from: Timestamp, to: Timestamp },
    #[error("--{field}: {reason}")]
    Bad { field: &'static str, reason: String },
}

impl Scope {
    /// A scope from the command line's words: dates as `YYYY-MM-DD` (00:00 UTC) or RFC 3339 times, kinds and
    /// merchants comma-separated.
    pub fn parse(
        merchants: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        kinds: Option<&str>,
        psp: Option<&str>,
    ) -> Result<Scope, ScopeError> {
        let time = |field: &'static str, s: &str| -> Result<Timestamp, ScopeError> {
            let text = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_owned() };
            Timestamp::parse_rfc3339(&text).map_err(|e| ScopeError::Bad { field, reason: format!("{s:?}: {e}") })
        };
        let list = |s: Option<&str>| -> Vec<String> {
            s.map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let kinds = list(kinds)
            .iter()
            .map(|k| {
                EventKind::ALL.into_iter().find(|e| e.as_str() == k).ok_or_else(|| ScopeError::Bad {
                    field: "kind",
                    reason: format!("{k:?} is not a kind ({})", EventKind::ALL.map(|e| e.as_str()).join(", ")),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let psp = psp
            .map(|p| {
                p.parse::<Psp>()
                    .map_err(|_| ScopeError::Bad { field: "psp", reason: format!("{p:?}: stripe or adyen") })
            })
            .transpose()?;
        let scope = Scope {
            merchants: list(merchants),
            from: from.map(|s| time("from", s)).transpose()?,
            to: to.map(|s| time("to", s)).transpose()?,
            kinds,
            psp,
        };
        if let (Some(from), Some(to)) = (scope.from, scope.to) {
            if from >= to {
                return Err(ScopeError::EmptyRange { from, to });
            }
        }
        Ok(scope)
    }

    pub fn contains(&self, e: &PaymentEvent) -> bool {
        (self.merchants.is_empty() || self.merchants.contains(&e.merchant_id))
            && self.from.is_none_or(|f| e.occurred_at >= f)
            && self.to.is_none_or(|t| e.occurred_at < t)
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.psp.is_none_or(|p| p == e.psp)
    }
}

/// One archived record in a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Located {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub fact_key: FactKey,
}

/// The records a scope resolved to, in (topic, partition, offset) order, and their checksum: SHA-256 over one
/// `topic\tpartition\toffset\tfact_key\n` line per record.
pub fn checksum(records: &[Located]) -> String {
    let mut h = Sha256::new();
    for r in records {
        h.update(format!("{}\t{}\t{}\t{}\n", r.topic, r.partition, r.offset, r.fact_key.0).as_bytes());
    }
    hex::encode(h.finalize())
}
