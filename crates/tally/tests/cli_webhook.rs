//! `tally webhook verify|normalize` as a user runs them: real fixture files, real exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    std::env::var_os("TALLY_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(manifest_dir()).join("../../../shared/fixtures"))
}

fn fixture(rel: &str) -> String {
    fixtures().join(rel).to_str().unwrap().to_owned()
}

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally")).args(args).env_remove("TALLY_WEBHOOK_SECRET").output().unwrap()
}

fn normalize(psp: &str, body: &std::path::Path) -> Output {
    tally(&["webhook", "normalize", "--psp", psp, "--body", body.to_str().unwrap()])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const STRIPE_HEADER: &str = "t=1700000000,v1=345230056b73981326632368f38d0b1743bf843c4fa3aeaea7eae082ba904d84";

fn verify_stripe(secret: &str, header: &str, now: &str) -> Output {
    let body = fixture("stripe/webhook-events/charge.succeeded.json");
    tally(&[
        "webhook",
        "verify",
        "--psp",
        "stripe",
        "--secret",
        secret,
        "--signature",
        header,
        "--body",
        &body,
        "--now",
        now,
    ])
}

#[test]
fn stripe_verify_exit_codes_and_reasons() {
    let ok = verify_stripe("whsec_test_secret", STRIPE_HEADER, "1700000100");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout(&ok).trim(), "valid");

    let wrong = verify_stripe("whsec_other", STRIPE_HEADER, "1700000100");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stdout(&wrong).contains("no signatures found matching"), "{}", stdout(&wrong));

    let stale = verify_stripe("whsec_test_secret", STRIPE_HEADER, "1700000301");
    assert_eq!(stale.status.code(), Some(1));
    assert!(stdout(&stale).contains("timestamp_outside_tolerance"), "{}", stdout(&stale));

    let malformed = verify_stripe("whsec_test_secret", "v1=abc", "1700000100");
    assert_eq!(malformed.status.code(), Some(1));
    assert!(stdout(&malformed).contains("signature_header_malformed"));

    // Rotation: the second secret matches.
    let body = fixture("stripe/webhook-events/charge.succeeded.json");
    let rotated = tally(&[
        "webhook",
        "verify",
        "--psp",
        "stripe",
        "--secret",
        "whsec_new",
        "--secret",
        "whsec_test_secret",
        "--signature",
        STRIPE_HEADER,
        "--body",
        &body,
        "--tolerance-secs",
        "0",
    ]);
    assert_eq!(rotated.status.code(), Some(0), "{}", stdout(&rotated));

    // No secret at all is a usage error, never a pass.
    let none = tally(&["webhook", "verify", "--psp", "stripe", "--signature", STRIPE_HEADER, "--body", &body]);
    assert_eq!(none.status.code(), Some(2));
}

#[test]
fn adyen_verify_items_and_raw_payloads() {
    let body = fixture("adyen/notifications/hmac-validation-webhook.json");
    let key = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174";
    let ok = tally(&["webhook", "verify", "--psp", "adyen", "--secret", key, "--body", &body]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    let bad = tally(&["webhook", "verify", "--psp", "adyen", "--secret", "00FF", "--body", &body]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("signature_mismatch"));
    let not_hex = tally(&["webhook", "verify", "--psp", "adyen", "--secret", "xyz", "--body", &body]);
    assert_eq!(not_hex.status.code(), Some(2));
    assert!(stderr(&not_hex).contains("not hex"));

    // A platform webhook, signed over its raw bytes in the HmacSignature header (Adyen's Java SDK vector).
    let vectors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("adyen/hmac_vectors.json")).unwrap()).unwrap();
    let v = &vectors["raw_payload_vectors"][1];
    let dir = tempdir();
    let payload = dir.join("payload.json");
    std::fs::write(&payload, v["payload"].as_str().unwrap()).unwrap();
    let raw = tally(&[
        "webhook",
        "verify",
        "--psp",
        "adyen",
        "--secret",
        v["key_hex"].as_str().unwrap(),
        "--signature",
        v["expected_b64"].as_str().unwrap(),
        "--body",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(raw.status.code(), Some(0), "{}", stdout(&raw));
}

#[test]
fn normalize_prints_canonical_events_as_json_lines() {
    let body = fixture("stripe/webhook-events/charge.succeeded.json");
    let out =
        tally(&["webhook", "normalize", "--psp", "stripe", "--body", &body, "--received-at", "2026-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "authorized");
    assert_eq!(lines[1]["kind"], "captured");
    assert_eq!(lines[1]["money"]["amount"], 2000);
    assert_eq!(lines[1]["money"]["currency"], "USD");
    assert_eq!(lines[1]["payment_id"], "stripe:ch_000000000000000000000000");
    assert_eq!(lines[1]["received_at"], "2026-01-01T00:00:00Z");
    assert_ne!(lines[0]["fact_key"], lines[1]["fact_key"]);
    assert_eq!(lines[0]["fact_key"].as_str().unwrap().len(), 36);

    let ignored =
        tally(&["webhook", "normalize", "--psp", "adyen", "--body", &fixture("adyen/notifications/offer-closed.json")]);
    assert_eq!(ignored.status.code(), Some(0));
    let line: serde_json::Value = serde_json::from_str(stdout(&ignored).trim()).unwrap();
    assert_eq!(line["ignored"]["event_type"], "OFFER_CLOSED");

    // A live notification is not booked by a test endpoint, and is by a live one.
    let chargeback = fixture("adyen/notifications/chargeback.json");
    let test = tally(&["webhook", "normalize", "--psp", "adyen", "--body", &chargeback]);
    let line: serde_json::Value = serde_json::from_str(stdout(&test).trim()).unwrap();
    assert_eq!(line["other_mode"]["live"], true, "{line}");
    let live = tally(&["webhook", "normalize", "--psp", "adyen", "--live", "--body", &chargeback]);
    let line: serde_json::Value = serde_json::from_str(stdout(&live).trim()).unwrap();
    assert_eq!(line["kind"], "chargeback_opened", "{line}");
}

#[test]
fn normalize_rejects_malformed_bodies_and_pans_without_printing_them() {
    let dir = tempdir();
    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, "{\"id\": \"evt_1\", ").unwrap();
    let out = normalize("stripe", &malformed);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("malformed_json"), "{}", stderr(&out));

    let original = std::fs::read_to_string(fixture("stripe/webhook-events/charge.succeeded.json")).unwrap();
    let with_pan = original.replace("\"(created by Stripe CLI)\"", "\"paid with 5555-5555-5555-4444\"");
    assert_ne!(with_pan, original);
    let pan = dir.join("pan.json");
    std::fs::write(&pan, with_pan).unwrap();
    let out = normalize("stripe", &pan);
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("pan_detected"), "{all}");
    assert!(!all.contains("5555") && !all.contains("4444"), "the number leaked: {all}");
    assert!(stdout(&out).is_empty());
}

fn tempdir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tally-cli-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The package's directory as cargo or nextest gives it when the test runs (the compile-time value only as a
/// fallback): a test binary reused from another checkout sharing the target directory still reads this checkout's
/// files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
