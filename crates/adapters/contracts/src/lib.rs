//! Event contracts (DESIGN §3): Avro schemas from `schemas/` (compiled in), framed in the Confluent wire format —
//! magic byte 0, the schema id as 4 big-endian bytes, then the Avro binary body.

mod payment_event;
mod raw_delivery;
mod registry;

pub use payment_event::{decode_lifecycle_record, decode_payment_event, encode_payment_event, EncodedEvent};
pub use raw_delivery::{decode_raw_delivery, encode_raw_delivery, RawDelivery, Verdict};
pub use registry::{schema, SchemaEntry, SCHEMAS};

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("not Confluent-framed: {0}")]
    Frame(&'static str),
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    #[error("schema id {got} is not a {expected} schema")]
    WrongSchema { got: u32, expected: &'static str },
    #[error("avro: {0}")]
    Avro(String),
    #[error("record violates the contract: {0}")]
    Violation(String),
}

impl From<apache_avro::Error> for ContractError {
    fn from(e: apache_avro::Error) -> Self {
        ContractError::Avro(e.to_string())
    }
}

/// Prefixes an Avro body with the Confluent wire-format header.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a Confluent-framed value into its schema id and Avro body.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), ContractError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [_, ..] if bytes.len() >= 5 => Err(ContractError::Frame("magic byte is not 0")),
        _ => Err(ContractError::Frame("shorter than the 5-byte header")),
    }
}
