//! The raw delivery record of `webhooks.raw.v1` (`schemas/webhooks/RawDelivery.v*.avsc`).

use std::collections::{BTreeMap, HashMap};

use apache_avro::to_avro_datum;
use apache_avro::types::Value;
use tally_domain::Timestamp;

use crate::payment_event::decode_record;
use crate::registry::{schema, RAW_DELIVERY_ID};
use crate::{frame, ContractError};

/// What Tally answered to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Duplicate,
    Ignored,
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Ignored => "ignored",
            Verdict::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Result<Self, ContractError> {
        Ok(match s {
            "accepted" => Verdict::Accepted,
            "duplicate" => Verdict::Duplicate,
            "ignored" => Verdict::Ignored,
            "rejected" => Verdict::Rejected,
            other => return Err(ContractError::Violation(format!("unknown verdict {other}"))),
        })
    }
}

/// A delivery as received. `body` is redacted (and `redacted` true) when it held a card number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDelivery {
    pub delivery_id: String,
    pub psp: String,
    pub received_at: Timestamp,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub body_sha256: String,
    pub redacted: bool,
    pub verdict: Verdict,
    pub code: Option<String>,
    pub fact_keys: Vec<String>,
}

pub fn encode_raw_delivery(d: &RawDelivery) -> Result<Vec<u8>, ContractError> {
    let headers: HashMap<String, Value> =
        d.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let record = Value::Record(vec![
        ("delivery_id".into(), Value::String(d.delivery_id.clone())),
        ("psp".into(), Value::String(d.psp.clone())),
        ("received_at".into(), Value::TimestampMicros(d.received_at.unix_micros())),
        ("headers".into(), Value::Map(headers)),
        ("body".into(), Value::Bytes(d.body.clone())),
        ("body_sha256".into(), Value::String(d.body_sha256.clone())),
        ("redacted".into(), Value::Boolean(d.redacted)),
        ("verdict".into(), Value::String(d.verdict.as_str().into())),
        (
            "code".into(),
            match &d.code {
                Some(c) => Value::Union(1, Box::new(Value::String(c.clone()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        ("fact_keys".into(), Value::Array(d.fact_keys.iter().map(|k| Value::String(k.clone())).collect())),
    ]);
    Ok(frame(RAW_DELIVERY_ID, &to_avro_datum(schema(RAW_DELIVERY_ID)?, record)?))
}

pub fn decode_raw_delivery(bytes: &[u8]) -> Result<RawDelivery, ContractError> {
    let mut f = decode_record(bytes, RAW_DELIVERY_ID, "RawDelivery")?;
    let headers = match f.take("headers")? {
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(ContractError::Violation(format!("header {k} is {other:?}"))),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        other => return Err(ContractError::Violation(format!("headers is {other:?}"))),
    };
    let fact_keys = match f.take("fact_keys")? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(ContractError::Violation(format!("fact key is {other:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(ContractError::Violation(format!("fact_keys is {other:?}"))),
    };
    Ok(RawDelivery {
        delivery_id: f.string("delivery_id")?,
        psp: f.string("psp")?,
        received_at: f.timestamp("received_at")?,
        headers,
        body: f.bytes("body")?,
        body_sha256: f.string("body_sha256")?,
        redacted: f.boolean("redacted")?,
        verdict: Verdict::parse(&f.string("verdict")?)?,
        code: f.opt_string("code")?,
        fact_keys,
    })
}
