//! An audit record (I8): who did what to what, why, under which ticket, with the checksums before and after. Its
//! canonical bytes are the Merkle leaf: compact JSON, fields in one fixed order, every field present (`null` where
//! it does not apply), object keys sorted (explicitly: a build may enable serde_json's `preserve_order`, which keeps
//! insertion order) — so the bytes an auditor is given are the
//! bytes that were hashed, and reading them needs nothing but a JSON parser.

use serde::{Deserialize, Serialize};

/// What the caller states. `action` names the operation (`recon.break.resolve`, `ledger.correction.book`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: String,
    pub action: String,
    /// What it acted on (`break:600de10fa4357254`, `reference:merchants`).
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    /// The scope of a replay or backfill, as stated.
    pub scope: Option<serde_json::Value>,
    /// Checksums of the state before and after (hex SHA-256 where Tally computes them).
    pub before: Option<String>,
    pub after: Option<String>,
    /// The plan or journal hash an action was bound to.
    pub plan: Option<String>,
    /// Anything else the action records (counts, ids).
    pub detail: Option<serde_json::Value>,
}

/// A record as stored: its position in the log and time, then the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub v: u8,
    pub seq: u64,
    /// UTC, RFC 3339 with microseconds.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    pub scope: Option<serde_json::Value>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub plan: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl Record {
    pub fn new(seq: u64, at: String, e: &Entry) -> Record {
        let sorted = |v: &Option<serde_json::Value>| {
            v.clone().map(|mut v| {
                v.sort_all_objects();
                v
            })
        };
        Record {
            v: 1,
            seq,
            at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            reason: e.reason.clone(),
            ticket: e.ticket.clone(),
            scope: sorted(&e.scope),
            before: e.before.clone(),
            after: e.after.clone(),
            plan: e.plan.clone(),
            detail: sorted(&e.detail),
        }
    }

    /// The canonical bytes (the Merkle leaf's input).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record is plain data")
    }

    /// A record from its bytes, only if they are its canonical bytes (re-encoding gives the same bytes).
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut sorted = r.clone();
        for v in [&mut sorted.scope, &mut sorted.detail].into_iter().flatten() {
            v.sort_all_objects();
        }
        if sorted.canonical() != bytes {
            return Err("not in canonical form".into());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_round_trip_and_a_non_canonical_form_is_refused() {
        let e = Entry {
            actor: "ana".into(),
            action: "recon.break.resolve".into(),
            subject: Some("break:b1".into()),
            detail: Some(serde_json::json!({"z": 1, "a": [2, 3]})),
            ..Entry::default()
        };
        let r = Record::new(4, "2026-12-02T00:00:00.000000Z".into(), &e);
        let bytes = r.canonical();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"seq":4,"at":"2026-12-02T00:00:00.000000Z","actor":"ana","action":"recon.break.resolve","subject":"break:b1","reason":null,"ticket":null,"scope":null,"before":null,"after":null,"plan":null,"detail":{"a":[2,3],"z":1}}"#
        );
        assert_eq!(Record::parse(&bytes).unwrap(), r);
        let spaced = String::from_utf8(bytes.clone()).unwrap().replacen(",", ", ", 1);
        assert!(Record::parse(spaced.as_bytes()).is_err());
        // Keys out of order are not canonical, whatever serde_json's features in this build.
        let unsorted = String::from_utf8(bytes).unwrap().replacen(r#"{"a":[2,3],"z":1}"#, r#"{"z":1,"a":[2,3]}"#, 1);
        assert!(Record::parse(unsorted.as_bytes()).is_err());
    }
}
