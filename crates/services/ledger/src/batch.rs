//! What a batch is made of: records as consumed, decoded against the contract, or refused with a reason.

use tally_contracts::{decode_payment_event, EncodedEvent};
use tally_domain::ledger::postings;

/// The lifecycle topics the ledger books (without prefix).
pub const LEDGER_TOPICS: &[&str] = &[
    "payments.authorization.v1",
    "payments.capture.v1",
    "payments.refund.v1",
    "payments.chargeback.v1",
    "payments.settlement-report.v1",
];

/// A record as consumed.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A record decoded against the contract.
#[derive(Debug, Clone)]
pub enum Decoded {
    Fact {
        origin: Incoming,
        fact: Box<EncodedEvent>,
    },
    /// Undecodable or contract-violating: goes to the DLQ with this reason; never skipped silently.
    Reject {
        origin: Incoming,
        reason: String,
    },
}

impl Decoded {
    pub fn decode(origin: Incoming) -> Decoded {
        let Some(value) = origin.value.as_deref() else {
            return Decoded::Reject { origin, reason: "record has no value".into() };
        };
        let fact = match decode_payment_event(value) {
            Ok(f) => f,
            Err(e) => return Decoded::Reject { reason: e.to_string(), origin },
        };
        if origin.key.as_deref() != Some(fact.event.payment_id.as_bytes()) {
            return Decoded::Reject { reason: "record key is not the payment id".into(), origin };
        }
        if let Err(e) = postings(&fact.event) {
            return Decoded::Reject { reason: format!("cannot be posted: {e}"), origin };
        }
        Decoded::Fact { origin, fact: Box::new(fact) }
    }

    pub fn origin(&self) -> &Incoming {
        match self {
            Decoded::Fact { origin, .. } | Decoded::Reject { origin, .. } => origin,
        }
    }
}
