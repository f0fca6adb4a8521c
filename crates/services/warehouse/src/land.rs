//! How a consumed fact becomes a warehouse row: decoded like every sink decodes it
//! (`tally_contracts::decode_lifecycle_record`), enriched with the reference data in force (`tally_reference::enrich`),
//! its identifiers tokenized (no PII lands), and its lineage attached (I6).

use duckdb::types::{TimeUnit, Value};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tally_contracts::EncodedEvent;
use tally_domain::Timestamp;
use tally_duckdb::duckdb;
use tally_reference::enrich::{Enrichment, Reference};
use tally_sink::LogRecord;
use time::Date;

use crate::PROCESSOR_VERSION;

/// The source every reporting-currency conversion names.
pub const FX_SOURCE: &str = "ECB euro foreign exchange reference rates";

/// Keyed tokens for identifiers that may be personal data (customer references — merchants often use an e-mail —,
/// card and device identifiers, free-text reasons): `tok_` + the first 16 bytes of HMAC-SHA256(key, value), hex.
/// The same value always gives the same token, so joins and counts still work; the value cannot be read back.
#[derive(Clone)]
pub struct Tokenizer {
    mac: Hmac<Sha256>,
}

impl Tokenizer {
    pub fn new(key: &[u8]) -> Tokenizer {
        Tokenizer { mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length") }
    }

    pub fn token(&self, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        format!("tok_{}", hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    /// A PSP's reason as it is when it looks like a code (`insufficient_funds`, `Refused`, `10.4 Fraud`), else a
    /// token: free text may carry a name or an address.
    pub fn reason(&self, reason: &str) -> String {
        let code_like = reason.len() <= 64
            && reason.bytes().all(|b| b.is_ascii_alphanumeric() || b" _-.:/".contains(&b))
            && reason.bytes().filter(u8::is_ascii_digit).nth(5).is_none();
        if code_like {
            reason.to_owned()
        } else {
            self.token(reason)
        }
    }
}

/// A fact's UTC day.
pub fn utc_day(t: Timestamp) -> Date {
    let secs = t.unix_secs();
    time::OffsetDateTime::from_unix_timestamp(secs).map_or(Date::MIN, |d| d.date())
}

/// DuckDB's DATE counts days from this.
const EPOCH: Date = time::macros::date!(1970 - 01 - 01);

pub(crate) fn date_value(d: Date) -> Value {
    Value::Date32(d.to_julian_day() - EPOCH.to_julian_day())
}

/// The day a DuckDB DATE (days since 1970-01-01) names.
pub(crate) fn date_of_days(days: i32) -> Date {
    EPOCH + time::Duration::days(i64::from(days))
}

pub(crate) fn ts_value(micros: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn opt_text(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::Text)
}

/// The enrichment columns, in table order (`merchant_valid_from` … `fx_version`).
pub(crate) fn enrichment_values(e: &Enrichment<'_>, reference: &Reference) -> Vec<Value> {
    let c = e.reporting.as_ref();
    vec![
        e.merchant.map_or(Value::Null, |m| date_value(m.valid_from)),
        Value::Boolean(e.merchant.is_none()),
        text(reference.reporting.code()),
        c.map_or(Value::Null, |c| Value::BigInt(c.amount.minor())),
        c.and_then(|c| c.fee).map_or(Value::Null, |f| Value::BigInt(f.minor())),
        c.map_or(Value::Null, |c| date_value(c.rate_date)),
        opt_text(c.map(|c| c.from_rate.to_string())),
        opt_text(c.map(|c| c.to_rate.to_string())),
        opt_text(c.map(|_| FX_SOURCE.to_owned())),
        Value::Boolean(c.is_none()),
        reference.merchants_version.map_or(Value::Null, Value::BigInt),
        reference.fx_version.map_or(Value::Null, Value::BigInt),
    ]
}

/// One `fct_payment_events` row, in column order (`sql/schema.sql`).
pub fn event_row(
    record: &LogRecord,
    fact: &EncodedEvent,
    reference: &Reference,
    tokens: &Tokenizer,
    now_micros: i64,
) -> Result<Vec<Value>, tally_money::MoneyError> {
    let e = &fact.event;
    let day = utc_day(e.occurred_at);
    let enrichment = reference.enrich(&e.merchant_id, day, e.money, e.fee)?;
    let a = &e.attributes;
    let mut row = vec![
        text(fact.fact_key.0.to_string()),
        text(&e.payment_id),
        text(e.psp.as_str()),
        text(e.kind.as_str()),
        text(&e.psp_reference),
        opt_text(e.original_reference.clone()),
        text(&e.merchant_id),
        text(e.money.currency.code()),
        Value::BigInt(e.money.amount.minor()),
        e.fee.map_or(Value::Null, |f| Value::BigInt(f.minor())),
        ts_value(e.occurred_at.unix_micros()),
        date_value(day),
        ts_value(e.received_at.unix_micros()),
        text(source_str(e.source)),
        text(&e.source_event_id),
        opt_text(a.card_brand.clone()),
        opt_text(a.card_country.clone()),
        opt_text(a.payment_method.clone()),
        opt_text(a.card_token.as_deref().map(|v| tokens.token(v))),
        opt_text(a.customer_token.as_deref().map(|v| tokens.token(v))),
        opt_text(a.device_id.as_deref().map(|v| tokens.token(v))),
        opt_text(a.reason.as_deref().filter(|r| !r.is_empty()).map(|r| tokens.reason(r))),
    ];
    row.extend(enrichment_values(&enrichment, reference));
    row.extend([
        text(&record.topic),
        Value::Int(record.partition),
        Value::BigInt(record.offset),
        opt_text(fact.delivery_id.clone()),
        Value::Int(i32::try_from(fact.schema_id).unwrap_or(i32::MAX)),
        text(PROCESSOR_VERSION),
        Value::Null,
        ts_value(now_micros),
        ts_value(now_micros),
    ]);
    debug_assert_eq!(row.len(), EVENT_COLUMNS);
    Ok(row)
}

/// Columns of `fct_payment_events`.
pub const EVENT_COLUMNS: usize = 43;

fn source_str(s: tally_domain::Source) -> &'static str {
    match s {
        tally_domain::Source::Webhook => "webhook",
        tally_domain::Source::Api => "api",
        tally_domain::Source::SettlementReport => "settlement_report",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_keyed_and_do_not_contain_the_value() {
        let t = Tokenizer::new(b"k1");
        let a = t.token("jane.doe@example.com");
        assert_eq!(a, t.token("jane.doe@example.com"));
        assert!(a.starts_with("tok_") && a.len() == 36 && !a.contains("jane"), "{a}");
        assert_ne!(a, Tokenizer::new(b"k2").token("jane.doe@example.com"), "keyed");
        assert_ne!(a, t.token("john@example.com"));
    }

    #[test]
    fn code_like_reasons_stay_and_free_text_is_tokenized() {
        let t = Tokenizer::new(b"k");
        for code in ["insufficient_funds", "Refused", "10.4 Fraud", "FRAUD-CARD ABSENT", "83"] {
            assert_eq!(t.reason(code), code);
        }
        for text in ["call Jane Doe at +44 20 7946 0958", "jane@example.com", "ship to 221B Baker Street, London"] {
            assert!(t.reason(text).starts_with("tok_"), "{text}");
        }
    }

    #[test]
    fn the_utc_day_of_a_fact() {
        let t = Timestamp::parse_rfc3339("2026-05-31T23:59:59.999999Z").unwrap();
        assert_eq!(utc_day(t), time::macros::date!(2026 - 05 - 31));
        let t = Timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        assert_eq!(utc_day(t), time::macros::date!(2026 - 06 - 01));
        assert_eq!(date_value(time::macros::date!(1970 - 01 - 02)), Value::Date32(1));
    }
}
