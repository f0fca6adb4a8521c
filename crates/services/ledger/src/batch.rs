//! What a batch is made of: records as consumed, decoded against the contract, or refused with a reason.

use tally_contracts::{decode_lifecycle_record, EncodedEvent};

/// The lifecycle topics the ledger books (without prefix).
pub const LEDGER_TOPICS: &[&str] = tally_kafka::LIFECYCLE_TOPICS;

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
        match decode_lifecycle_record(origin.key.as_deref(), origin.value.as_deref()) {
            Ok(fact) => Decoded::Fact { origin, fact: Box::new(fact) },
            Err(reason) => Decoded::Reject { origin, reason },
        }
    }

    pub fn origin(&self) -> &Incoming {
        match self {
            Decoded::Fact { origin, .. } | Decoded::Reject { origin, .. } => origin,
        }
    }
}
