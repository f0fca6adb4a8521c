//! Instants as values. The core never asks what time it is; callers pass it in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A UTC instant with microsecond precision (the precision of Avro `timestamp-micros` and PostgreSQL).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {why}")]
pub struct TimestampError {
    pub input: String,
    pub why: String,
}

impl Timestamp {
    /// 0001-01-01T00:00:00Z, the earliest instant RFC 3339 can write.
    pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
    /// 9999-12-31T23:59:59.999999Z, the latest instant RFC 3339 can write.
    pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

    /// From Unix microseconds, refusing instants RFC 3339 cannot render (years outside 1–9999).
    pub fn from_unix_micros(micros: i64) -> Result<Self, TimestampError> {
        if (Self::MIN_MICROS..=Self::MAX_MICROS).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(TimestampError { input: format!("{micros} µs"), why: "outside years 1–9999".into() })
        }
    }

    /// From whole Unix seconds, as Stripe's `created` fields carry them.
    pub fn from_unix_secs(secs: i64) -> Result<Self, TimestampError> {
        let micros = secs
            .checked_mul(1_000_000)
            .ok_or_else(|| TimestampError { input: secs.to_string(), why: "out of range".into() })?;
        Self::from_unix_micros(micros)
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Parses RFC 3339 with any offset (Adyen's `eventDate` is `2017-01-19T16:42:03+01:00`).
    pub fn parse_rfc3339(input: &str) -> Result<Self, TimestampError> {
        let err = |why: String| TimestampError { input: input.to_owned(), why };
        let dt = OffsetDateTime::parse(input, &Rfc3339).map_err(|e| err(e.to_string()))?;
        let micros = i64::try_from(dt.unix_timestamp_nanos() / 1_000).map_err(|_| err("out of range".into()))?;
        Self::from_unix_micros(micros)
    }

    fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .expect("constructors keep the value within years 1–9999")
    }
}

/// RFC 3339 in UTC, e.g. `2017-01-19T15:42:03Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime().format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}us", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_renders_utc() {
        let t = Timestamp::parse_rfc3339("2017-01-19T16:42:03+01:00").unwrap();
        assert_eq!(t.unix_secs(), 1_484_840_523);
        assert_eq!(t.to_string(), "2017-01-19T15:42:03Z");
        assert_eq!(Timestamp::from_unix_secs(1_484_840_523).unwrap(), t);
        // Adyen's offer-closed fixture carries a +02:12 offset; it must still parse.
        assert!(Timestamp::parse_rfc3339("2019-04-29T14:17:30+02:12").is_ok());
        assert!(Timestamp::parse_rfc3339("2019-04-29 14:17:30").is_err());
        assert!(Timestamp::from_unix_secs(i64::MAX).is_err());
        // Past year 9999: refused at construction, so Display and Serialize can never fail.
        assert!(Timestamp::from_unix_secs(253_402_300_800).is_err());
        assert_eq!(Timestamp::from_unix_secs(253_402_300_799).unwrap().to_string(), "9999-12-31T23:59:59Z");
        assert!(Timestamp::from_unix_micros(Timestamp::MIN_MICROS - 1).is_err());
    }

    #[test]
    fn serde_round_trips() {
        let t = Timestamp::from_unix_micros(1_700_000_000_123_456).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
