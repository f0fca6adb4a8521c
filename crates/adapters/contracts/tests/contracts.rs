//! The contracts: every canonical event from the shared fixtures round-trips through its Confluent-framed Avro
//! record; the schema registry file agrees with the code; every new schema version reads the previous one.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tally_contracts::*;
use tally_domain::{Psp, Timestamp};
use tally_psp::Outcome;

fn fixtures() -> PathBuf {
    PathBuf::from(manifest_dir()).join("../../../../shared/fixtures")
}

fn fixture_events() -> Vec<tally_domain::PaymentEvent> {
    let mut events = Vec::new();
    for (psp, dir) in [(Psp::Stripe, "stripe/webhook-events"), (Psp::Adyen, "adyen/notifications")] {
        for entry in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let at = Timestamp::from_unix_micros(1_800_000_000_123_456).unwrap();
            // Both modes, so that every fixture that states a fact is in the sample.
            let live = tally_psp::Endpoint { live: true, ..Default::default() };
            let outcomes = [tally_psp::Endpoint::default(), live]
                .iter()
                .flat_map(|endpoint| tally_psp::normalize(psp, &body, at, endpoint).unwrap())
                .collect::<Vec<_>>();
            for outcome in outcomes {
                if let Outcome::Events(e) = outcome {
                    events.extend(e);
                }
            }
        }
    }
    events
}

#[test]
fn every_fixture_event_round_trips() {
    let events = fixture_events();
    assert!(events.len() >= 20, "only {} events", events.len());
    for event in events {
        let bytes = encode_payment_event(&event, Some("d-1")).unwrap();
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), 5, "schema id of PaymentEvent v4");
        let decoded = decode_payment_event(&bytes).unwrap();
        assert_eq!(decoded.event, event);
        assert_eq!(decoded.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(decoded.schema_id, 5);
    }
}

/// Records written with v1 (in the archive and the broker's log) still decode, each with the schema named by its
/// frame; a v2-only kind cannot be passed off as v1.
#[test]
fn older_records_still_decode_and_newer_kinds_are_not_older() {
    let mut event = fixture_events().into_iter().find(|e| e.kind == tally_domain::EventKind::Captured).unwrap();
    let v2 = encode_payment_event(&event, Some("d-1")).unwrap();
    // v2 and v3 appended enum symbols only, so a v1 body is byte-identical for a v1 kind: re-frame it with id 1.
    let mut v1 = v2.clone();
    v1[1..5].copy_from_slice(&1u32.to_be_bytes());
    let decoded = decode_payment_event(&v1).unwrap();
    assert_eq!((decoded.schema_id, &decoded.event), (1, &event));
    event.kind = tally_domain::EventKind::CaptureReversed;
    let mut not_v1 = encode_payment_event(&event, None).unwrap();
    assert_eq!(decode_payment_event(&not_v1).unwrap().event.kind, tally_domain::EventKind::CaptureReversed);
    not_v1[1..5].copy_from_slice(&1u32.to_be_bytes());
    assert!(decode_payment_event(&not_v1).is_err(), "v1 has no capture_reversed");
    // Each version only appended symbols: a v2 kind in a v3 body re-framed as v2 reads the same; a settlement kind
    // (v3) cannot be passed off as v2.
    let mut v2_framed = v2.clone();
    v2_framed[1..5].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(decode_payment_event(&v2_framed).unwrap().schema_id, 3);
    event.kind = tally_domain::EventKind::SettledCredit;
    let mut not_v2 = encode_payment_event(&event, None).unwrap();
    assert_eq!(decode_payment_event(&not_v2).unwrap().event.kind, tally_domain::EventKind::SettledCredit);
    not_v2[1..5].copy_from_slice(&3u32.to_be_bytes());
    assert!(decode_payment_event(&not_v2).is_err(), "v2 has no settled_credit");
    // A conversion kind (v4) cannot be passed off as v3; a v3 kind re-framed as v3 reads the same.
    let mut v3_framed = not_v2.clone();
    v3_framed[1..5].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(decode_payment_event(&v3_framed).unwrap().schema_id, 4);
    event.kind = tally_domain::EventKind::ConversionIn;
    let mut not_v3 = encode_payment_event(&event, None).unwrap();
    assert_eq!(decode_payment_event(&not_v3).unwrap().event.kind, tally_domain::EventKind::ConversionIn);
    not_v3[1..5].copy_from_slice(&4u32.to_be_bytes());
    assert!(decode_payment_event(&not_v3).is_err(), "v3 has no conversion_in");
    let v3_kinds = &tally_domain::EventKind::ALL[..tally_domain::EventKind::V3_KINDS];
    assert_eq!(v3_kinds.last(), Some(&tally_domain::EventKind::SettledPayout));
    let v2_kinds = &tally_domain::EventKind::ALL[..tally_domain::EventKind::V2_KINDS];
    assert_eq!(v2_kinds.last(), Some(&tally_domain::EventKind::PrearbitrationLost));
    let v1 = &tally_domain::EventKind::ALL[..tally_domain::EventKind::V1_KINDS];
    assert_eq!(
        (v1.first(), v1.last()),
        (Some(&tally_domain::EventKind::Authorized), Some(&tally_domain::EventKind::Fee))
    );
}

#[test]
fn contract_violations_are_errors() {
    let event = fixture_events().remove(0);
    let bytes = encode_payment_event(&event, None).unwrap();
    assert!(matches!(unframe(&bytes[..3]), Err(ContractError::Frame(_))));
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = 1;
    assert!(matches!(decode_payment_event(&wrong_magic), Err(ContractError::Frame(_))));
    let mut unknown = bytes.clone();
    unknown[4] = 99;
    assert!(matches!(decode_payment_event(&unknown), Err(ContractError::WrongSchema { got: 99, .. })));
    let truncated = decode_payment_event(&bytes[..bytes.len() / 2]);
    assert!(matches!(truncated, Err(ContractError::Avro(_))), "{truncated:?}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(decode_payment_event(&trailing), Err(ContractError::Violation(_))));
    // A record whose fact key does not match its identity is refused (a forged or corrupted record).
    let mut tampered = event.clone();
    tampered.psp_reference.push('x');
    let forged = encode_payment_event(&tampered, None).unwrap();
    let body_start = 5;
    let (a, b) = (event.fact_key().to_string(), tampered.fact_key().to_string());
    let text = forged[body_start..].to_vec();
    let pos = text.windows(b.len()).position(|w| w == b.as_bytes()).unwrap();
    let mut swapped = forged.clone();
    swapped[body_start + pos..body_start + pos + a.len()].copy_from_slice(a.as_bytes());
    assert!(matches!(decode_payment_event(&swapped), Err(ContractError::Violation(_))));
}

#[test]
fn raw_delivery_round_trips() {
    let d = RawDelivery {
        delivery_id: "d-42".into(),
        psp: "stripe".into(),
        received_at: Timestamp::from_unix_micros(1_700_000_000_000_001).unwrap(),
        headers: BTreeMap::from([("stripe-signature".into(), "t=1,v1=ab".into())]),
        body: b"{\"id\":\"evt_1\"}".to_vec(),
        body_sha256: "00".repeat(32),
        redacted: false,
        verdict: Verdict::Accepted,
        code: None,
        fact_keys: vec!["k1".into(), "k2".into()],
    };
    let bytes = encode_raw_delivery(&d).unwrap();
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), 2);
    assert_eq!(decode_raw_delivery(&bytes).unwrap(), d);
    assert!(matches!(decode_payment_event(&bytes), Err(ContractError::WrongSchema { got: 2, .. })));
}

#[test]
fn registry_file_lists_exactly_the_compiled_schemas() {
    let dir = PathBuf::from(manifest_dir()).join("../../../schemas");
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("registry.json")).unwrap()).unwrap();
    let listed: Vec<(String, u64, u64, String)> = registry["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["subject"].as_str().unwrap().to_owned(),
                s["version"].as_u64().unwrap(),
                s["id"].as_u64().unwrap(),
                s["file"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let compiled: Vec<(String, u64, u64, String)> = SCHEMAS
        .iter()
        .map(|s| (s.subject.to_owned(), u64::from(s.version), u64::from(s.id), s.file.to_owned()))
        .collect();
    assert_eq!(listed, compiled);
    for s in SCHEMAS {
        assert_eq!(std::fs::read_to_string(dir.join(s.file)).unwrap(), s.source, "{} is stale", s.file);
        let parsed = Schema::parse_str(s.source).unwrap();
        let name = parsed.name().map(|n| n.fullname(None)).unwrap();
        assert_eq!(name, s.subject, "subject = the record's full name");
    }
    let mut ids: Vec<u32> = SCHEMAS.iter().map(|s| s.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), SCHEMAS.len(), "schema ids are unique");
}

/// The registry's compatibility rule: per subject, versions consecutive, and each version reads data written with
/// the one before. Returns what breaks it.
fn compatibility_problems(schemas: &[&SchemaEntry]) -> Vec<String> {
    let mut by_subject: BTreeMap<&str, Vec<&SchemaEntry>> = BTreeMap::new();
    for s in schemas {
        by_subject.entry(s.subject).or_default().push(*s);
    }
    let mut problems = Vec::new();
    for (subject, mut versions) in by_subject {
        versions.sort_by_key(|s| s.version);
        for pair in versions.windows(2) {
            if pair[1].version != pair[0].version + 1 {
                problems.push(format!("{subject}: v{} follows v{}", pair[1].version, pair[0].version));
            }
            let old = Schema::parse_str(pair[0].source).unwrap();
            let new = Schema::parse_str(pair[1].source).unwrap();
            if let Err(e) = SchemaCompatibility::can_read(&old, &new) {
                problems.push(format!("{subject} v{} cannot read v{}: {e}", pair[1].version, pair[0].version));
            }
        }
    }
    problems
}

/// Backward compatibility: a consumer on version N reads data written with version N-1 — and the rule has pairs to
/// check (PaymentEvent v1 → v2 since issue 12).
#[test]
fn every_new_version_reads_the_previous_one() {
    assert!(SCHEMAS.iter().filter(|s| s.subject == "io.tally.payments.PaymentEvent").count() >= 2);
    assert_eq!(compatibility_problems(&SCHEMAS.iter().collect::<Vec<_>>()), Vec::<String>::new());
}

/// Issue 13, item 4: the rule itself catches a breaking next version added to the registry (a field without a
/// default, an enum symbol removed), and accepts a compatible one.
#[test]
fn a_breaking_next_version_in_the_registry_is_caught() {
    let latest = SCHEMAS.iter().filter(|s| s.subject == "io.tally.payments.PaymentEvent").max_by_key(|s| s.version);
    let latest = latest.unwrap();
    // The registry as it is, plus a next version built from `json`.
    let with_next = |json: serde_json::Value| {
        let next = SchemaEntry {
            subject: latest.subject,
            version: latest.version + 1,
            id: 999,
            file: "test",
            source: Box::leak(json.to_string().into_boxed_str()),
        };
        let all: Vec<&SchemaEntry> = SCHEMAS.iter().chain(std::iter::once(&next)).collect();
        compatibility_problems(&all)
    };
    let base: serde_json::Value = serde_json::from_str(latest.source).unwrap();

    let mut no_default = base.clone();
    no_default["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "new_field", "type": "string"}));
    let problems = with_next(no_default);
    assert_eq!(problems.len(), 1, "{problems:?}");

    let mut fewer_kinds = base.clone();
    let kind = fewer_kinds["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "kind").unwrap();
    kind["type"]["symbols"].as_array_mut().unwrap().pop();
    assert_eq!(with_next(fewer_kinds).len(), 1);

    let mut with_default = base;
    with_default["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "new_field", "type": ["null", "string"], "default": null}));
    assert_eq!(with_next(with_default), Vec::<String>::new());
}

/// The package's directory as cargo or nextest gives it when the test runs (the compile-time value only as a
/// fallback): a test binary reused from another checkout sharing the target directory still reads this checkout's
/// files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
