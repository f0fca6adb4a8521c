//! `PaymentEvent` ⇄ Avro (`schemas/payments/PaymentEvent.v*.avsc`).

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, to_avro_datum};
use tally_domain::{Attributes, EventKind, FactKey, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Amount, Currency, Money};

use crate::registry::{schema, PAYMENT_EVENT_ID, PAYMENT_EVENT_IDS};
use crate::{frame, unframe, ContractError};

/// A decoded lifecycle record: the event, the delivery that carried it, and the schema id it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub event: PaymentEvent,
    /// The event's fact key, computed once and checked against the key the record carries.
    pub fact_key: FactKey,
    pub delivery_id: Option<String>,
    pub schema_id: u32,
}

fn opt_str(v: Option<&str>) -> Value {
    match v {
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_owned()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn kind_index(kind: EventKind) -> u32 {
    EventKind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL") as u32
}

/// Encodes an event as a Confluent-framed Avro value.
pub fn encode_payment_event(event: &PaymentEvent, delivery_id: Option<&str>) -> Result<Vec<u8>, ContractError> {
    let a = &event.attributes;
    let (psp_idx, source_idx) = (
        match event.psp {
            Psp::Stripe => 0,
            Psp::Adyen => 1,
        },
        match event.source {
            Source::Webhook => 0,
            Source::Api => 1,
            Source::SettlementReport => 2,
        },
    );
    let record = Value::Record(vec![
        ("fact_key".into(), Value::String(event.fact_key().to_string())),
        ("kind".into(), Value::Enum(kind_index(event.kind), event.kind.as_str().into())),
        ("payment_id".into(), Value::String(event.payment_id.clone())),
        ("psp".into(), Value::Enum(psp_idx, event.psp.as_str().into())),
        ("psp_reference".into(), Value::String(event.psp_reference.clone())),
        ("original_reference".into(), opt_str(event.original_reference.as_deref())),
        ("merchant_id".into(), Value::String(event.merchant_id.clone())),
        ("amount_minor".into(), Value::Long(event.money.amount.minor())),
        ("currency".into(), Value::String(event.money.currency.code().into())),
        (
            "fee_minor".into(),
            match event.fee {
                Some(f) => Value::Union(1, Box::new(Value::Long(f.minor()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        ("occurred_at".into(), Value::TimestampMicros(event.occurred_at.unix_micros())),
        ("received_at".into(), Value::TimestampMicros(event.received_at.unix_micros())),
        (
            "source".into(),
            Value::Enum(
                source_idx,
                match event.source {
                    Source::Webhook => "webhook",
                    Source::Api => "api",
                    Source::SettlementReport => "settlement_report",
                }
                .into(),
            ),
        ),
        ("source_event_id".into(), Value::String(event.source_event_id.clone())),
        ("delivery_id".into(), opt_str(delivery_id)),
        (
            "attributes".into(),
            Value::Record(vec![
                ("card_token".into(), opt_str(a.card_token.as_deref())),
                ("card_brand".into(), opt_str(a.card_brand.as_deref())),
                ("card_country".into(), opt_str(a.card_country.as_deref())),
                ("customer_token".into(), opt_str(a.customer_token.as_deref())),
                ("device_id".into(), opt_str(a.device_id.as_deref())),
                ("payment_method".into(), opt_str(a.payment_method.as_deref())),
                ("reason".into(), opt_str(a.reason.as_deref())),
            ]),
        ),
    ]);
    let body = to_avro_datum(schema(PAYMENT_EVENT_ID)?, record)?;
    Ok(frame(PAYMENT_EVENT_ID, &body))
}

/// A lifecycle record as every sink reads it (key = payment id, value = an encoded [`PaymentEvent`] the ledger can
/// post), or why it is not one — the same verdict for every sink, so that their books agree on what a fact is.
pub fn decode_lifecycle_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<EncodedEvent, String> {
    let value = value.ok_or("record has no value")?;
    let fact = decode_payment_event(value).map_err(|e| e.to_string())?;
    if key != Some(fact.event.payment_id.as_bytes()) {
        return Err("record key is not the payment id".into());
    }
    tally_domain::ledger::postings(&fact.event).map_err(|e| format!("cannot be posted: {e}"))?;
    Ok(fact)
}

/// Decodes a Confluent-framed lifecycle record and checks the contract: known enums, a known currency, and a
/// fact key that matches the fact's identity.
pub fn decode_payment_event(bytes: &[u8]) -> Result<EncodedEvent, ContractError> {
    let (mut f, schema_id) = decode_record_of(bytes, PAYMENT_EVENT_IDS, "PaymentEvent")?;
    let attributes = Fields::of(f.take("attributes")?)?.into_attributes()?;
    let currency = Currency::from_code(&f.string("currency")?).map_err(|e| ContractError::Violation(e.to_string()))?;
    let kind_name = f.enum_symbol("kind")?;
    let kind = EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind_name)
        .ok_or_else(|| ContractError::Violation(format!("unknown kind {kind_name}")))?;
    let psp = f.enum_symbol("psp")?.parse::<Psp>().map_err(ContractError::Violation)?;
    let source = match f.enum_symbol("source")?.as_str() {
        "webhook" => Source::Webhook,
        "api" => Source::Api,
        "settlement_report" => Source::SettlementReport,
        other => return Err(ContractError::Violation(format!("unknown source {other}"))),
    };
    let fact_key = f.string("fact_key")?;
    let event = PaymentEvent {
        kind,
        payment_id: f.string("payment_id")?,
        psp,
        psp_reference: f.string("psp_reference")?,
        original_reference: f.opt_string("original_reference")?,
        merchant_id: f.string("merchant_id")?,
        money: Money::new(Amount::from_minor(f.long("amount_minor")?), currency),
        fee: f.opt_long("fee_minor")?.map(Amount::from_minor),
        occurred_at: f.timestamp("occurred_at")?,
        received_at: f.timestamp("received_at")?,
        source,
        source_event_id: f.string("source_event_id")?,
        attributes,
    };
    let computed = event.fact_key();
    if computed.to_string() != fact_key {
        return Err(ContractError::Violation(format!(
            "fact_key {fact_key} does not match the fact's identity ({computed})"
        )));
    }
    Ok(EncodedEvent { event, fact_key: computed, delivery_id: f.opt_string("delivery_id")?, schema_id })
}

/// Unframes `bytes`, checks that they were written with schema `id`, and decodes exactly one record.
pub(crate) fn decode_record(bytes: &[u8], id: u32, expected: &'static str) -> Result<Fields, ContractError> {
    decode_record_of(bytes, &[id], expected).map(|(f, _)| f)
}

/// [`decode_record`] for a subject with several readable versions: each record is read with the schema it was
/// written with (named by its frame), and the id is returned.
pub(crate) fn decode_record_of(
    bytes: &[u8],
    ids: &[u32],
    expected: &'static str,
) -> Result<(Fields, u32), ContractError> {
    let (got, mut body) = unframe(bytes)?;
    if !ids.contains(&got) {
        return Err(ContractError::WrongSchema { got, expected });
    }
    let id = got;
    let value = from_avro_datum(schema(id)?, &mut body, None)?;
    // A record must be exactly one datum: bytes left after it mean another schema or a corrupted value.
    if !body.is_empty() {
        return Err(ContractError::Violation(format!("{} trailing bytes after the record", body.len())));
    }
    Ok((Fields::of(value)?, id))
}

/// Field access on a decoded Avro record, with contract errors that name the field.
pub(crate) struct Fields(Vec<(String, Value)>);

impl Fields {
    pub(crate) fn of(value: Value) -> Result<Self, ContractError> {
        match value {
            Value::Record(fields) => Ok(Fields(fields)),
            other => Err(ContractError::Violation(format!("expected a record, got {other:?}"))),
        }
    }

    pub(crate) fn take(&mut self, name: &str) -> Result<Value, ContractError> {
        let i = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| ContractError::Violation(format!("missing field {name}")))?;
        Ok(std::mem::replace(&mut self.0[i].1, Value::Null))
    }

    fn bad(name: &str, v: &Value) -> ContractError {
        ContractError::Violation(format!("field {name} has unexpected value {v:?}"))
    }

    pub(crate) fn string(&mut self, name: &str) -> Result<String, ContractError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            v => Err(Self::bad(name, &v)),
        }
    }

    pub(crate) fn bytes(&mut self, name: &str) -> Result<Vec<u8>, ContractError> {
        match self.take(name)? {
            Value::Bytes(b) => Ok(b),
            v => Err(Self::bad(name, &v)),
        }
    }

    pub(crate) fn boolean(&mut self, name: &str) -> Result<bool, ContractError> {
        match self.take(name)? {
            Value::Boolean(b) => Ok(b),
            v => Err(Self::bad(name, &v)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, ContractError> {
        match self.take(name)? {
            Value::Long(l) => Ok(l),
            v => Err(Self::bad(name, &v)),
        }
    }

    pub(crate) fn timestamp(&mut self, name: &str) -> Result<Timestamp, ContractError> {
        match self.take(name)? {
            Value::TimestampMicros(t) | Value::Long(t) => {
                Timestamp::from_unix_micros(t).map_err(|e| ContractError::Violation(format!("{name}: {e}")))
            }
            v => Err(Self::bad(name, &v)),
        }
    }

    fn enum_symbol(&mut self, name: &str) -> Result<String, ContractError> {
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            v => Err(Self::bad(name, &v)),
        }
    }

    pub(crate) fn opt_string(&mut self, name: &str) -> Result<Option<String>, ContractError> {
        match self.take(name)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s)),
                v => Err(Self::bad(name, &v)),
            },
            v => Err(Self::bad(name, &v)),
        }
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>, ContractError> {
        match self.take(name)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                Value::Long(l) => Ok(Some(l)),
                v => Err(Self::bad(name, &v)),
            },
            v => Err(Self::bad(name, &v)),
        }
    }

    fn into_attributes(mut self) -> Result<Attributes, ContractError> {
        Ok(Attributes {
            card_token: self.opt_string("card_token")?,
            card_brand: self.opt_string("card_brand")?,
            card_country: self.opt_string("card_country")?,
            customer_token: self.opt_string("customer_token")?,
            device_id: self.opt_string("device_id")?,
            payment_method: self.opt_string("payment_method")?,
            reason: self.opt_string("reason")?,
        })
    }
}
