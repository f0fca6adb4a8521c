//! Issue 3's acceptance tests, against the real broker, PostgreSQL and Redis.

mod common;

use common::*;
use serde_json::Value;
use tally_contracts::{decode_payment_event, decode_raw_delivery, Verdict};
use tally_domain::EventKind;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_stripe_delivery_lands_once_framed_keyed_and_archived() {
    let h = Harness::start(Options::default()).await;
    let tag = unique("s");
    let body = stripe_event("charge.succeeded.json", &tag);
    let (status, reply) = h.stripe(&body).await;
    assert_eq!(status, 200, "{reply}");
    let reply = json(&reply);
    assert_eq!(reply["status"], "accepted");
    assert_eq!(reply["facts"], 2, "charge.succeeded with captured=true states an authorization and a capture");

    let auth = h.records("payments.authorization.v1");
    let capture = h.records("payments.capture.v1");
    assert_eq!((auth.len(), capture.len()), (1, 1));
    let payment_id = format!("stripe:ch_{tag}");
    for (record, kind) in [(&auth[0], EventKind::Authorized), (&capture[0], EventKind::Captured)] {
        assert_eq!(record.key, payment_id.as_bytes(), "key = payment id");
        assert_eq!(record.value[0], 0, "Confluent magic byte");
        let decoded = decode_payment_event(&record.value).unwrap();
        assert_eq!(decoded.event.kind, kind);
        assert_eq!(decoded.event.money.amount.minor(), 2000);
        assert_eq!(decoded.delivery_id.as_deref(), reply["delivery_id"].as_str());
        let fact_key = record.headers.iter().find(|(k, _)| k == "fact_key").map(|(_, v)| v.clone()).unwrap();
        assert_eq!(fact_key, decoded.event.fact_key().to_string().into_bytes());
    }
    let raw = h.records("webhooks.raw.v1");
    assert_eq!(raw.len(), 1);
    let raw = decode_raw_delivery(&raw[0].value).unwrap();
    assert_eq!(raw.verdict, Verdict::Accepted);
    assert_eq!(raw.body, body.as_bytes(), "the PSP's own bytes");
    assert!(!raw.redacted);
    assert!(raw.headers.contains_key("stripe-signature"));
    assert_eq!(raw.fact_keys.len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_adyen_batch_is_accepted_item_by_item() {
    let h = Harness::start(Options::default()).await;
    let psp = unique("P");
    let body = adyen_notification(&[
        adyen_item("AUTHORISATION", &psp, None, 1500),
        adyen_item("CAPTURE", &format!("{psp}C"), Some(&psp), 1500),
    ]);
    let (status, reply) = h.adyen(&body).await;
    assert_eq!((status, reply.as_str()), (200, "[accepted]"));
    let auth = h.records("payments.authorization.v1");
    let capture = h.records("payments.capture.v1");
    assert_eq!((auth.len(), capture.len()), (1, 1));
    assert_eq!(auth[0].key, format!("adyen:{psp}").as_bytes());
    assert_eq!(capture[0].key, format!("adyen:{psp}").as_bytes(), "the capture is keyed by the payment");
    assert_eq!(decode_payment_event(&capture[0].value).unwrap().event.kind, EventKind::Captured);
    assert_eq!(h.records("webhooks.raw.v1").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_delivery_five_times_gives_one_record_per_fact() {
    let h = Harness::start(Options::default()).await;
    // Sequentially.
    let body = stripe_event("charge.captured.json", &unique("q"));
    let mut facts = 0;
    for _ in 0..5 {
        let (status, reply) = h.stripe(&body).await;
        assert_eq!(status, 200, "{reply}");
        facts += json(&reply)["facts"].as_u64().unwrap();
    }
    assert_eq!(facts, 1);
    // Concurrently: a duplicate that finds the fact in flight gets 409 and retries, as a PSP does.
    let body = on_api_version(&stripe_event("charge.refund.updated.json", &unique("c")), "2025-03-31.basil");
    let sends = (0..5).map(|_| {
        let (h, body) = (&h, body.clone());
        async move {
            loop {
                let (status, reply) = h.stripe(&body).await;
                match status {
                    200 => return json(&reply)["facts"].as_u64().unwrap(),
                    409 => {
                        assert_eq!(json(&reply)["code"], "claim_in_progress");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => panic!("{other}: {reply}"),
                }
            }
        }
    });
    let produced: u64 = futures::future::join_all(sends).await.into_iter().sum();
    assert_eq!(produced, 1);
    assert_eq!(h.records("payments.capture.v1").len(), 1);
    assert_eq!(h.records("payments.refund.v1").len(), 1);
    assert_eq!(h.ingest.metrics.facts_produced.load(std::sync::atomic::Ordering::Relaxed), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_5xx_releases_the_claim_and_the_retry_lands_once() {
    let mut broker = Broker::start();
    let h = Harness::start(Options { brokers: broker.brokers(), message_timeout_ms: 2000, ..Options::default() }).await;
    let body = stripe_event("charge.succeeded.json", &unique("b"));
    broker.stop();
    let (status, reply) = h.stripe(&body).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(json(&reply)["code"], "broker_unavailable");
    assert_eq!(json(&reply)["retryable"], true);
    broker.restart();
    // The PSP's retry: the released claim is free again, so the facts are produced now, exactly once.
    let mut accepted = None;
    for _ in 0..20 {
        let (status, reply) = h.stripe(&body).await;
        if status == 200 {
            accepted = Some(json(&reply));
            break;
        }
        assert_eq!(status, 503, "{reply}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let accepted = accepted.expect("the retry succeeds once the broker is back");
    assert_eq!(accepted["facts"], 2);
    let (status, reply) = h.stripe(&body).await;
    assert_eq!((status, json(&reply)["facts"].as_u64()), (200, Some(0)));
    assert_eq!(h.records("payments.authorization.v1").len(), 1);
    assert_eq!(h.records("payments.capture.v1").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_intake_continues_on_the_postgres_fallback() {
    let mut redis = Redis::start();
    let h = Harness::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    // Redis works: claims go there.
    let (status, _) = h.stripe(&stripe_event("charge.captured.json", &unique("r"))).await;
    assert_eq!(status, 200);
    assert_eq!(h.ingest.metrics.dedup_fallbacks_to_postgres.load(std::sync::atomic::Ordering::Relaxed), 0);
    redis.stop();
    let body = stripe_event("charge.succeeded.json", &unique("f"));
    let mut produced = 0;
    for _ in 0..3 {
        let (status, reply) = h.stripe(&body).await;
        assert_eq!(status, 200, "{reply}");
        produced += json(&reply)["facts"].as_u64().unwrap();
    }
    assert_eq!(produced, 2, "one record per fact, deduplicated by PostgreSQL");
    assert!(h.ingest.metrics.dedup_fallbacks_to_postgres.load(std::sync::atomic::Ordering::Relaxed) >= 6);
    assert_eq!(h.records("payments.authorization.v1").len(), 1);
    assert_eq!(h.records("payments.capture.v1").len(), 2);
    let health = reqwest::get(format!("{}/healthz", h.url)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["redis"]["ok"].as_bool()), (Some("degraded"), Some(false)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_code_and_nothing_reaches_lifecycle_topics() {
    let h = Harness::start(Options { max_body_bytes: 8 * 1024, ..Options::default() }).await;
    let good = stripe_event("charge.captured.json", &unique("x"));
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let h = &h;
        async move { h.post("/webhooks/stripe", &headers, body).await }
    };
    let check = |(status, reply): (u16, String), want_status: u16, want_code: &str| {
        assert_eq!(status, want_status, "{reply}");
        assert_eq!(json(&reply)["code"], want_code, "{reply}");
    };
    // Forged: signed with another secret.
    let forged = tally_psp::stripe::sign(good.as_bytes(), &tally_domain::Secret::new("whsec_evil".into()), now_secs());
    check(post(vec![("stripe-signature", forged)], good.clone()).await, 400, "signature_mismatch");
    // Replayed outside the tolerance.
    let stale = stripe_header(&good, now_secs() - 3600);
    check(post(vec![("stripe-signature", stale)], good.clone()).await, 400, "timestamp_outside_tolerance");
    check(post(vec![], good.clone()).await, 400, "signature_header_missing");
    // Malformed JSON, correctly signed.
    let garbage = "{\"id\": \"evt_1\", \"type\": ".to_owned();
    check(post(vec![("stripe-signature", stripe_header(&garbage, now_secs()))], garbage).await, 400, "malformed_json");
    // Oversized.
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(9 * 1024));
    check(post(vec![("stripe-signature", stripe_header(&big, now_secs()))], big).await, 413, "body_too_large");
    // A card number in a field Tally does not even read: 422 and a redacted quarantine record.
    let pan = "4000056655665556";
    let with_pan = good.replace("\"metadata\": {\n      }", &format!("\"metadata\": {{\"note\": \"{pan}\"}}"));
    assert_ne!(with_pan, good, "the fixture changed shape");
    let (status, reply) = post(vec![("stripe-signature", stripe_header(&with_pan, now_secs()))], with_pan).await;
    check((status, reply.clone()), 422, "pan_detected");
    assert!(!reply.contains(pan), "{reply}");
    // An event type Stripe does not publish: acknowledged as ignored, so Stripe stops retrying; bytes archived.
    let unknown = good.replace("\"type\": \"charge.captured\"", "\"type\": \"charge.teleported\"");
    let (status, reply) = post(vec![("stripe-signature", stripe_header(&unknown, now_secs()))], unknown).await;
    assert_eq!((status, json(&reply)["code"].as_str()), (200, Some("unknown_event_type")), "{reply}");

    assert_eq!(h.lifecycle_count(), 0, "nothing reached a lifecycle topic");
    // Every delivery that passed the size limit is archived with its verdict; the PAN one redacted.
    let raw: Vec<_> = h.records("webhooks.raw.v1").iter().map(|r| decode_raw_delivery(&r.value).unwrap()).collect();
    assert_eq!(raw.len(), 6);
    let pan_raw = raw.iter().find(|r| r.code.as_deref() == Some("pan_detected")).unwrap();
    assert!(pan_raw.redacted);
    assert!(!String::from_utf8_lossy(&pan_raw.body).contains(pan));
    assert!(String::from_utf8_lossy(&pan_raw.body).contains("************5556"));
    assert!(raw.iter().all(|r| r.verdict != Verdict::Accepted));
    // The quarantine row, without the number.
    let pool = tally_postgres::pool(&tally_postgres::PostgresConfig {
        url: env("TALLY__POSTGRES__URL"),
        ..Default::default()
    })
    .unwrap();
    let client = pool.get().await.unwrap();
    let delivery: uuid::Uuid = pan_raw.delivery_id.parse().unwrap();
    let row = client
        .query_one("SELECT reason, redacted_body FROM quarantine WHERE delivery_id = $1", &[&delivery])
        .await
        .unwrap();
    let (reason, stored): (String, Vec<u8>) = (row.get(0), row.get(1));
    assert_eq!(reason, "pan_detected");
    assert!(!String::from_utf8_lossy(&stored).contains(pan));
    // Counted by reason.
    let m = &h.ingest.metrics;
    for code in [
        tally_ingest::RejectCode::SignatureMismatch,
        tally_ingest::RejectCode::TimestampOutsideTolerance,
        tally_ingest::RejectCode::MalformedJson,
        tally_ingest::RejectCode::BodyTooLarge,
        tally_ingest::RejectCode::PanDetected,
    ] {
        assert_eq!(m.rejections(code), 1, "{}", code.as_str());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adyen_batch_with_one_bad_item_is_refused_whole_and_its_retry_loses_nothing() {
    let h = Harness::start(Options::default()).await;
    let psp = unique("A");
    let good = adyen_item("AUTHORISATION", &psp, None, 1000);
    let other = adyen_item("AUTHORISATION", &format!("{psp}B"), None, 2000);
    let signed = adyen_notification(&[good.clone(), other.clone()]);
    // Tamper with the second item after signing: its HMAC no longer matches.
    let tampered = signed.replace("\"value\":2000", "\"value\":2001");
    assert_ne!(tampered, signed);
    let (status, reply) = h.adyen(&tampered).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(json(&reply)["code"], "signature_mismatch");
    assert!(json(&reply)["message"].as_str().unwrap().contains("item 1"), "{reply}");
    assert_eq!(h.lifecycle_count(), 0, "the good item is not produced alone");
    // Adyen retries the batch (here, a correct one): both items land.
    let (status, reply) = h.adyen(&signed).await;
    assert_eq!((status, reply.as_str()), (200, "[accepted]"));
    assert_eq!(h.records("payments.authorization.v1").len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_each_dependency() {
    let h = Harness::start(Options::default()).await;
    let resp = reqwest::get(format!("{}/healthz", h.url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let health: Value = resp.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    for part in ["kafka", "postgres", "redis"] {
        assert_eq!(health[part]["ok"], true, "{part}: {health}");
    }
    let metrics = reqwest::get(format!("{}/metrics", h.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tally_ingest_rejections_total{code=\"pan_detected\"} 0"), "{metrics}");
    h.stop().await;
}

/// Issue 12, at the edge: each Adyen item on its own (an unknown code never takes the batch's capture with it), a
/// notification of the other mode never booked, an unmappable one recorded before its 2xx, and a fact the ledger
/// would refuse refused with a 4xx the PSP sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_gets_its_own_verdict_and_nothing_unbookable_is_acknowledged() {
    let h = Harness::start(Options::default()).await;
    let psp = unique("U");
    let capture = adyen_item("CAPTURE", &format!("{psp}C"), Some(&psp), 1000);
    let unknown = adyen_item("BRAND_NEW_CODE", &format!("{psp}N"), Some(&psp), 1000);
    let (status, reply) = h.adyen(&adyen_notification(&[unknown, capture])).await;
    assert_eq!((status, reply.as_str()), (200, "[accepted]"));
    assert_eq!(h.records("payments.capture.v1").len(), 1, "the capture is booked beside the unknown item");
    assert_eq!(h.ingest.metrics.items_unknown_type.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A live notification at this test endpoint: acknowledged, kept in the raw topic, never booked.
    let live = adyen_notification(&[adyen_item("CAPTURE", &format!("{psp}L"), Some(&psp), 500)])
        .replace("\"live\":\"false\"", "\"live\":\"true\"");
    assert!(live.contains("\"live\":\"true\""));
    let (status, reply) = h.adyen(&live).await;
    assert_eq!((status, reply.as_str()), (200, "[accepted]"));
    let mut stripe_live: Value = serde_json::from_str(&stripe_event("charge.captured.json", &unique("l"))).unwrap();
    stripe_live["livemode"] = true.into();
    let (status, reply) = h.stripe(&stripe_live.to_string()).await;
    assert_eq!((status, json(&reply)["code"].as_str()), (200, Some("other_mode")), "{reply}");
    assert_eq!(h.records("payments.capture.v1").len(), 1, "no other-mode capture is booked");
    assert_eq!(h.ingest.metrics.items_other_mode.load(std::sync::atomic::Ordering::Relaxed), 2);

    // A CANCEL_OR_REFUND that does not say which: acknowledged once recorded for review.
    let (status, reply) =
        h.adyen(&adyen_notification(&[adyen_item("CANCEL_OR_REFUND", &format!("{psp}X"), Some(&psp), 700)])).await;
    assert_eq!((status, reply.as_str()), (200, "[accepted]"));
    let pool = tally_postgres::pool(&tally_postgres::PostgresConfig {
        url: env("TALLY__POSTGRES__URL"),
        ..Default::default()
    })
    .unwrap();
    let raw: Vec<_> = h.records("webhooks.raw.v1").iter().map(|r| decode_raw_delivery(&r.value).unwrap()).collect();
    let excepted = raw.iter().find(|r| r.code.as_deref() == Some("exception_recorded")).expect("raw record");
    let delivery: uuid::Uuid = excepted.delivery_id.parse().unwrap();
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT kind, event_type, detail->>'reason' FROM edge_exceptions WHERE delivery_id = $1",
            &[&delivery],
        )
        .await
        .unwrap();
    let (kind, event_type, reason): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((kind.as_str(), event_type.as_str()), ("unmapped", "CANCEL_OR_REFUND"));
    assert!(reason.contains("modification.action"), "{reason}");

    // A zero capture: the ledger would refuse it, so the edge does, while Adyen can still fix and resend it.
    let (status, reply) =
        h.adyen(&adyen_notification(&[adyen_item("CAPTURE", &format!("{psp}Z"), Some(&psp), 0)])).await;
    assert_eq!((status, json(&reply)["code"].as_str()), (400, Some("invalid_amount")), "{reply}");
    assert_eq!(h.records("payments.capture.v1").len(), 1);
    h.stop().await;
}

/// Issue 12, item 8: a re-delivery of a booked fact with other content is still acknowledged (the first version
/// stands), but recorded as a `content_conflict` with both deliveries — through Redis and through the PostgreSQL
/// fallback alike; an identical re-delivery is a plain duplicate; a delivery that states one fact twice with two
/// contents is a conflict too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_with_other_content_is_recorded_as_a_conflict_with_both_deliveries() {
    use std::sync::atomic::Ordering::Relaxed;
    let pool = tally_postgres::pool(&tally_postgres::PostgresConfig {
        url: env("TALLY__POSTGRES__URL"),
        ..Default::default()
    })
    .unwrap();
    // Nothing listens on port 9 of loopback: every claim goes to the PostgreSQL fallback.
    for redis_url in [env("TALLY__REDIS__URL"), "redis://127.0.0.1:9/".to_owned()] {
        let h = Harness::start(Options { redis_url: redis_url.clone(), ..Options::default() }).await;
        let psp = unique("K");
        let capture = |value| adyen_item("CAPTURE", &format!("{psp}C"), Some(&psp), value);
        assert_eq!(h.adyen(&adyen_notification(&[capture(1000)])).await.0, 200);
        // The same content again: a duplicate, no exception.
        assert_eq!(h.adyen(&adyen_notification(&[capture(1000)])).await.0, 200);
        assert_eq!(h.ingest.metrics.facts_content_conflict_at_edge.load(Relaxed), 0, "{redis_url}");
        // Other money under the same fact key: acknowledged, not produced, recorded.
        let (status, reply) = h.adyen(&adyen_notification(&[capture(900)])).await;
        assert_eq!((status, reply.as_str()), (200, "[accepted]"), "{redis_url}");
        assert_eq!(h.records("payments.capture.v1").len(), 1, "the first version stands");
        assert_eq!(h.ingest.metrics.facts_content_conflict_at_edge.load(Relaxed), 1, "{redis_url}");
        let booked = decode_payment_event(&h.records("payments.capture.v1")[0].value).unwrap();
        let rows = pool
            .get()
            .await
            .unwrap()
            .query("SELECT kind, delivery_id, detail FROM edge_exceptions WHERE fact_key = $1", &[&booked.fact_key.0])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{redis_url}");
        let (kind, delivery, detail): (String, uuid::Uuid, Value) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!(kind, "content_conflict");
        // Both versions' lineage: the delivery that was produced, and this one (each in the raw topic).
        let raw: Vec<_> = h.records("webhooks.raw.v1").iter().map(|r| decode_raw_delivery(&r.value).unwrap()).collect();
        assert_eq!(raw.len(), 3);
        let produced = raw.iter().find(|r| r.verdict == Verdict::Accepted).expect("the produced delivery");
        assert_eq!(detail["produced"]["delivery_id"], produced.delivery_id, "{detail}");
        assert_eq!(detail["incoming"]["delivery_id"], delivery.to_string(), "{detail}");
        assert!(raw.iter().any(|r| r.delivery_id == delivery.to_string() && r.verdict == Verdict::Duplicate));
        assert_eq!(detail["incoming"]["event"]["money"]["amount"], 900, "{detail}");
        assert_ne!(detail["produced"]["content_digest"], detail["incoming"]["content_digest"]);
        h.stop().await;
    }

    // One delivery stating one refund twice, with two amounts: the first is produced, the second recorded.
    let h = Harness::start(Options::default()).await;
    let psp = unique("D");
    let refund = |value| adyen_item("REFUND", &format!("{psp}R"), Some(&psp), value);
    assert_eq!(h.adyen(&adyen_notification(&[refund(300), refund(200)])).await.0, 200);
    assert_eq!(h.records("payments.refund.v1").len(), 1);
    let raw = decode_raw_delivery(&h.records("webhooks.raw.v1")[0].value).unwrap();
    let delivery: uuid::Uuid = raw.delivery_id.parse().unwrap();
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT detail FROM edge_exceptions WHERE delivery_id = $1 AND kind = 'content_conflict'",
            &[&delivery],
        )
        .await
        .unwrap();
    let detail: Value = row.get(0);
    assert_eq!(detail["produced"]["event"]["money"]["amount"], 300, "{detail}");
    assert_eq!(detail["incoming"]["event"]["money"]["amount"], 200, "{detail}");
    h.stop().await;
}

/// I4 at the edge: a same-content delivery that states a fact *earlier* than what was produced (the PSP's original,
/// overtaken by a duplicate of a later restatement) is produced too, and the claim moves to it; anything not earlier
/// than the claim's time stays a duplicate. Through Redis and through the PostgreSQL fallback alike, and within one
/// delivery (the fact is produced once, at its earliest statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_content_delivery_stating_a_fact_earlier_is_produced_and_later_ones_are_duplicates() {
    use std::sync::atomic::Ordering::Relaxed;
    let at = |item: serde_json::Value, date: &str| {
        let mut item = item;
        item["eventDate"] = date.into();
        item
    };
    for redis_url in [env("TALLY__REDIS__URL"), "redis://127.0.0.1:9/".to_owned()] {
        let h = Harness::start(Options { redis_url: redis_url.clone(), ..Options::default() }).await;
        let psp = unique("E");
        let capture = |date: &str| at(adyen_item("CAPTURE", &format!("{psp}C"), Some(&psp), 1000), date);
        let mut produced = Vec::new();
        for date in [
            "2025-11-02T00:00:20+00:00",
            "2025-11-01T23:59:20+00:00",
            "2025-11-02T00:00:20+00:00",
            "2025-11-01T23:59:50+00:00",
            "2025-11-01T23:59:20+00:00",
            "2025-11-01T23:58:00+00:00",
        ] {
            let before = h.ingest.metrics.facts_produced.load(Relaxed);
            assert_eq!(h.adyen(&adyen_notification(&[capture(date)])).await.0, 200, "{redis_url}");
            produced.push(h.ingest.metrics.facts_produced.load(Relaxed) - before);
        }
        assert_eq!(produced, [1, 1, 0, 0, 0, 1], "{redis_url}");
        assert_eq!(h.ingest.metrics.facts_restated_earlier_at_edge.load(Relaxed), 2, "{redis_url}");
        let times: Vec<String> = h
            .records("payments.capture.v1")
            .iter()
            .map(|r| decode_payment_event(&r.value).unwrap().event.occurred_at.to_string())
            .collect();
        assert_eq!(
            times,
            ["2025-11-02T00:00:20Z", "2025-11-01T23:59:20Z", "2025-11-01T23:58:00Z"],
            "{redis_url}: one record per earlier statement, in order"
        );
        assert_eq!(h.ingest.metrics.facts_content_conflict_at_edge.load(Relaxed), 0);
        h.stop().await;
    }

    // One delivery stating the fact twice, the later statement first: one record, at the earlier time.
    let h = Harness::start(Options::default()).await;
    let psp = unique("F");
    let capture = |date: &str| at(adyen_item("CAPTURE", &format!("{psp}C"), Some(&psp), 500), date);
    let (status, _) = h
        .adyen(&adyen_notification(&[capture("2025-11-02T00:00:20+00:00"), capture("2025-11-01T23:59:20+00:00")]))
        .await;
    assert_eq!(status, 200);
    let records = h.records("payments.capture.v1");
    assert_eq!(records.len(), 1);
    assert_eq!(decode_payment_event(&records[0].value).unwrap().event.occurred_at.to_string(), "2025-11-01T23:59:20Z");
    h.stop().await;
}
