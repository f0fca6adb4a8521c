//! Import and matching against a real PostgreSQL: a file is stored once by its SHA-256 (the same bytes again change
//! nothing), its lines read back as parsed, the rows refuse change, and the ledger's facts and the merchants'
//! plans are read for matching.

use tally_domain::Psp;
use tally_recon::store::{self, Imported};
use tally_recon::{reconcile, BreakKind, Rules};

const STRIPE: &str =
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,charge_id
txn_1,2026-06-01 10:00:00,2026-06-03 00:00:00,eur,100.00,3.20,96.80,charge,ch_1,ch_1
txn_2,2026-06-01 11:00:00,2026-06-03 00:00:00,eur,50.00,1.75,48.25,charge,ch_2,ch_2
txn_3,2026-06-01 12:00:00,2026-06-03 00:00:00,eur,9.00,0.56,8.44,charge,ch_9,ch_9
";

async fn fact(pool: &deadpool_postgres::Pool, charge: &str, minor: i64, offset: i64) {
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO event_log (fact_key, kind, payment_id, psp, psp_reference, merchant_id, amount_minor, currency,
                occurred_at, received_at, source, source_event_id, topic, kafka_partition, kafka_offset, schema_id,
                processor_version, event)
             VALUES (gen_random_uuid(), 'captured', $1, 'stripe', $2, 'm1', $3, 'EUR', '2026-06-01 09:00:00+00',
                now(), 'webhook', 'evt', 'payments.capture.v1', 0, $4, 3, 'test', '{}')",
            &[&format!("stripe:{charge}"), &charge, &minor, &offset],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_report_is_stored_once_read_back_as_parsed_and_matched_against_the_ledger() {
    let (_, pool) = tally_testkit::database("recon_store").await;
    let options = tally_psp::stripe::report::Options { account: "acct_1".into(), ..Default::default() };
    let report = tally_psp::stripe::report::parse("june.csv", STRIPE.as_bytes(), &options).unwrap();
    assert!(matches!(store::import(&pool, &report).await.unwrap(), Imported::Stored { lines: 3, .. }));
    // The same bytes under another name: nothing changes.
    let again = tally_psp::stripe::report::parse("copy-of-june.csv", STRIPE.as_bytes(), &options).unwrap();
    match store::import(&pool, &again).await.unwrap() {
        Imported::AlreadyImported { as_name, .. } => assert_eq!(as_name, "june.csv"),
        other => panic!("{other:?}"),
    }
    let lines = store::lines(&pool).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>(), report.lines);
    assert!(lines.iter().all(|l| l.file == "june.csv" && l.file_sha256 == report.sha256));
    // What the PSPs said is append-only.
    let client = pool.get().await.unwrap();
    for sql in ["UPDATE report_lines SET fee_minor = 0", "DELETE FROM report_files", "TRUNCATE report_lines"] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }

    // The ledger booked ch_1 and ch_2 (ch_2 for 49.00); ch_9 it never saw. Plan: 2.9% + 30 cents.
    fact(&pool, "ch_1", 10_000, 1).await;
    fact(&pool, "ch_2", 4_900, 2).await;
    client
        .batch_execute(
            "INSERT INTO reference_versions (kind, content_hash, source, rows, changes) VALUES ('merchants', 'h', 't', 1, 1);
             INSERT INTO merchant_versions (merchant_id, valid_from, legal_name, country, mcc, settlement_currency,
                risk_tier, stripe_ppm, stripe_fixed_minor, adyen_ppm, adyen_fixed_minor, version_id)
             SELECT 'm1', '2025-01-01', 'M One', 'DE', '5999', 'EUR', 'low', 29000, 30, 12000, 10, version_id
               FROM reference_versions;",
        )
        .await
        .unwrap();
    let facts = store::facts(&pool, &[Psp::Stripe]).await.unwrap();
    assert_eq!(facts.len(), 2);
    let plans = store::plans(&pool).await.unwrap();
    let price = |m: &str, p: Psp, t| plans.price(m, p, t);
    let sla = |_: Psp| 2;
    let outcome = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &price, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    let kinds: Vec<(BreakKind, Option<&str>)> =
        outcome.breaks.iter().map(|b| (b.kind, b.payment_id.as_deref())).collect();
    assert_eq!(
        kinds,
        [(BreakKind::MissingInLedger, Some("stripe:ch_9")), (BreakKind::AmountMismatch, Some("stripe:ch_2"))]
    );
    let amount = outcome.breaks.iter().find(|b| b.kind == BreakKind::AmountMismatch).unwrap();
    assert_eq!(amount.fact.as_ref().map(|f| (f.topic.as_str(), f.offset)), Some(("payments.capture.v1", 2)));
    assert_eq!(amount.line.as_ref().map(|l| (l.file.as_str(), l.line)), Some(("june.csv", 3)));
    // ch_1: 2.9% of 100.00 + 0.30 = 3.20, as the line says: matched.
    let totals = &outcome.totals[&("stripe".to_owned(), "EUR".to_owned())];
    assert_eq!((totals.lines, totals.matched, totals.booked_minor, totals.settled_minor), (3, 1, 14_900, 15_900));
}

#[tokio::test]
async fn breaks_are_recorded_once_and_resolved_once_attributably() {
    use tally_recon::store::{Resolution, ResolveError};
    let (_, pool) = tally_testkit::database("recon_breaks").await;
    let options = tally_psp::stripe::report::Options::default();
    let report = tally_psp::stripe::report::parse("june.csv", STRIPE.as_bytes(), &options).unwrap();
    store::import(&pool, &report).await.unwrap();
    fact(&pool, "ch_1", 10_000, 1).await;
    let lines = store::lines(&pool).await.unwrap();
    let facts = store::facts(&pool, &[Psp::Stripe]).await.unwrap();
    let no_plan = |_: &str, _: Psp, _| None;
    let sla = |_: Psp| 2;
    let outcome = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &no_plan, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    // ch_2 and ch_9: no captured fact.
    assert_eq!(outcome.count(BreakKind::MissingInLedger), 2);
    let ids: Vec<String> = outcome.breaks.iter().map(|b| b.id()).collect();
    let open = store::record_breaks(&pool, &outcome.breaks, "test", None).await.unwrap();
    assert_eq!(open, ids);
    // Found again: the same ids, the first sighting kept.
    let seen = store::list_breaks(&pool, true, None, None).await.unwrap();
    assert_eq!(store::record_breaks(&pool, &outcome.breaks, "test", None).await.unwrap(), ids);
    let again = store::list_breaks(&pool, true, None, None).await.unwrap();
    assert_eq!(
        again.iter().map(|b| (&b.break_id, &b.first_seen)).collect::<Vec<_>>(),
        seen.iter().map(|b| (&b.break_id, &b.first_seen)).collect::<Vec<_>>()
    );

    // Sorted by payment: ch_2 first, ch_9 second.
    let (ch2, ch9) = (&ids[0], &ids[1]);
    assert_eq!(outcome.breaks[0].payment_id.as_deref(), Some("stripe:ch_2"));
    // Resolutions: attributable, once; one that books money is not something this build can do.
    let err = store::resolve(&pool, ch9, Resolution::Accepted, "", "T-1", "ana").await.unwrap_err();
    assert!(matches!(err, ResolveError::Refused(_)), "{err}");
    let err = store::resolve(&pool, ch9, Resolution::Auto, "it went away", "T-1", "ana").await.unwrap_err();
    assert!(err.to_string().contains("not by hand"), "{err}");
    let err = store::resolve(&pool, ch9, Resolution::FixedByBooking, "wrong", "T-1", "ana").await.unwrap_err();
    assert!(err.to_string().contains("second operator"), "{err}");
    assert!(matches!(
        store::resolve(&pool, "0000", Resolution::Accepted, "r", "T", "ana").await,
        Err(ResolveError::NoSuchBreak(_))
    ));
    store::resolve(&pool, ch9, Resolution::Accepted, "PSP concession", "T-1", "ana").await.unwrap();
    let err = store::resolve(&pool, ch9, Resolution::Accepted, "again", "T-2", "bob").await.unwrap_err();
    assert!(matches!(err, ResolveError::AlreadyResolved { .. }), "{err}");
    let open = store::list_breaks(&pool, true, None, None).await.unwrap();
    assert_eq!(open.iter().map(|b| &b.break_id).collect::<Vec<_>>(), [ch2]);
    let shown = store::list_breaks(&pool, false, None, Some(ch9)).await.unwrap();
    assert_eq!((shown[0].resolution.as_deref(), shown[0].resolved_by.as_deref()), (Some("accepted"), Some("ana")));
    assert_eq!((shown[0].reason.as_deref(), shown[0].ticket.as_deref()), (Some("PSP concession"), Some("T-1")));
    // The database holds the maker-checker rule too (approver ≠ maker), and refuses changing a resolution.
    let client = pool.get().await.unwrap();
    let err = client
        .execute(
            "INSERT INTO recon_resolutions (break_id, resolution, reason, ticket, actor, journal_sha256, approved_by)
             VALUES ($1, 'fixed_by_booking', 'r', 'T', 'ana', 'abc', 'ana')",
            &[ch2],
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("check"), "{err:?}");
    assert!(client.batch_execute("UPDATE recon_resolutions SET actor = 'eve'").await.is_err());

    // A full run that no longer finds the open one (ch_2's capture arrived) clears it as `auto`; the accepted one
    // is still found, and stays as it was resolved.
    fact(&pool, "ch_2", 5_000, 2).await;
    let facts = store::facts(&pool, &[Psp::Stripe]).await.unwrap();
    let outcome = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &no_plan, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    assert_eq!(outcome.breaks.iter().map(|b| b.id()).collect::<Vec<_>>(), std::slice::from_ref(ch9));
    let open = store::record_breaks(
        &pool,
        &outcome.breaks,
        "test",
        Some(store::Clears::Psps(&[Psp::Stripe], "tally recon psp")),
    )
    .await
    .unwrap();
    assert!(open.is_empty(), "{open:?}");
    let cleared = store::list_breaks(&pool, false, None, Some(ch2)).await.unwrap();
    assert_eq!(
        (cleared[0].resolution.as_deref(), cleared[0].resolved_by.as_deref()),
        (Some("auto"), Some("tally recon psp"))
    );
    assert_eq!(
        store::list_breaks(&pool, false, None, Some(ch9)).await.unwrap()[0].resolution.as_deref(),
        Some("accepted")
    );
    // Both resolutions are audit records: the operator's, and the run's clearing with the break it cleared.
    let audited: Vec<(String, String, Option<String>)> = client
        .query(
            "SELECT action, actor, convert_from(record, 'UTF8')::jsonb ->> 'detail' FROM audit_log ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        audited,
        [
            ("recon.break.resolve".to_owned(), "ana".to_owned(), None),
            (
                "recon.breaks.auto_resolve".to_owned(),
                "tally recon psp".to_owned(),
                Some(format!("{{\"breaks\": [\"{ch2}\"]}}"))
            )
        ]
    );
}

#[tokio::test]
async fn a_correction_journal_is_booked_only_with_a_second_operators_approval_of_its_exact_hash() {
    use sha2::Digest;
    use tally_ledger::corrections::{FileEntry, JournalFile};
    use tally_recon::store::ResolveError;
    let (_, pool) = tally_testkit::database("recon_corrections").await;
    let options = tally_psp::stripe::report::Options::default();
    let report = tally_psp::stripe::report::parse("june.csv", STRIPE.as_bytes(), &options).unwrap();
    store::import(&pool, &report).await.unwrap();
    fact(&pool, "ch_1", 10_000, 1).await;
    fact(&pool, "ch_2", 5_000, 2).await;
    let (lines, facts) = (store::lines(&pool).await.unwrap(), store::facts(&pool, &[Psp::Stripe]).await.unwrap());
    let (no_plan, sla) = (|_: &str, _: Psp, _| None, |_: Psp| 2);
    let outcome = reconcile(
        &lines,
        &facts,
        &Rules { sla_days: &sla, price: &no_plan, scope: None, tolerances: &tally_recon::NO_TOLERANCE },
    );
    // ch_9 settled at the PSP, but its capture never reached the ledger.
    assert_eq!(outcome.breaks.iter().map(|b| b.kind).collect::<Vec<_>>(), [BreakKind::MissingInLedger]);
    store::record_breaks(&pool, &outcome.breaks, "test", None).await.unwrap();
    let id = outcome.breaks[0].id();
    let journal = |entries: &[(&str, i64)]| JournalFile {
        entries: entries
            .iter()
            .map(|(a, m)| FileEntry { account: a.to_string(), currency: "EUR".into(), amount_minor: *m })
            .collect(),
    };

    // Refused before anything is stored: unbalanced, outside the chart, no reason.
    let refusals = [
        (journal(&[("psp_receivable:stripe", 900), ("merchant_payable:m1", -800)]), "do not balance in EUR"),
        (journal(&[("psp_receivable:paypal", 900), ("merchant_payable:m1", -900)]), "entry 0: `psp_receivable:paypal`"),
        (journal(&[("psp_receivable:stripe", 900)]), "at least two entries"),
    ];
    for (bad, why) in refusals {
        let err = store::propose(&pool, &id, &bad, "capture missed", "FIN-7", "ana").await.unwrap_err();
        assert!(matches!(&err, ResolveError::Refused(m) if m.contains(why)), "{why}: {err}");
    }
    let good = journal(&[("psp_receivable:stripe", 900), ("merchant_payable:m1", -900)]);
    assert!(store::propose(&pool, &id, &good, " ", "FIN-7", "ana").await.is_err());
    assert!(store::proposals(&pool, &id).await.unwrap().is_empty());

    // The maker proposes; the hash is over the break and the entries in order, as written here by hand.
    let proposal = store::propose(&pool, &id, &good, "capture missed by the webhook", "FIN-7", "ana").await.unwrap();
    let canonical = format!(
        "tally-correction-v1\nrecon_break:{id}\npsp_receivable:stripe\tEUR\t900\nmerchant_payable:m1\tEUR\t-900\n"
    );
    assert_eq!(proposal.journal_sha256, hex::encode(sha2::Sha256::digest(canonical.as_bytes())));
    let again = store::propose(&pool, &id, &good, "capture missed by the webhook", "FIN-7", "ana").await.unwrap();
    assert_eq!(again.journal_sha256, proposal.journal_sha256);
    assert_eq!(store::proposals(&pool, &id).await.unwrap().len(), 1);
    let hash = proposal.journal_sha256;

    // The checker: not the maker, and only the exact proposal.
    let err = store::approve(&pool, &id, &hash, "ana").await.unwrap_err();
    assert!(err.to_string().contains("second operator"), "{err}");
    let err = store::approve(&pool, &id, &"0".repeat(64), "bob").await.unwrap_err();
    assert!(err.to_string().contains("no proposed journal"), "{err}");
    let client = pool.get().await.unwrap();
    let balances = || async {
        client
            .query("SELECT account, currency, balance_minor FROM account_balances ORDER BY 1, 2", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2)))
            .collect::<Vec<_>>()
    };
    assert!(balances().await.is_empty(), "nothing is booked before the approval");
    let booked = store::approve(&pool, &id, &hash, "bob").await.unwrap();
    assert_eq!(booked.journal_sha256, hash);
    assert_eq!(
        balances().await,
        [
            ("merchant_payable:m1".to_owned(), "EUR".to_owned(), -900),
            ("psp_receivable:stripe".to_owned(), "EUR".to_owned(), 900)
        ]
    );
    let shown = &store::list_breaks(&pool, false, None, Some(&id)).await.unwrap()[0];
    assert_eq!(
        (shown.resolution.as_deref(), shown.resolved_by.as_deref(), shown.approved_by.as_deref()),
        (Some("fixed_by_booking"), Some("ana"), Some("bob"))
    );
    assert_eq!(shown.journal_sha256.as_deref(), Some(hash.as_str()));
    // Once: a second approval or proposal finds the break resolved; the balances stay.
    assert!(matches!(store::approve(&pool, &id, &hash, "carol").await, Err(ResolveError::AlreadyResolved { .. })));
    assert!(matches!(
        store::propose(&pool, &id, &good, "again", "FIN-8", "carol").await,
        Err(ResolveError::AlreadyResolved { .. })
    ));
    assert_eq!(balances().await.len(), 2);
    let verified = tally_ledger::verify(&pool, "tally-ledger").await.unwrap();
    assert_eq!((verified.corrections, verified.correction_problems.len()), (1, 0), "{}", verified.render());
    assert!(verified.unbalanced_journals.is_empty() && verified.balance_mismatches.is_empty());
    // The two facts inserted bare have no journal; the correction is no fact's journal.
    assert_eq!(verified.missing_journals, 2);
    // The audit log holds the proposal and the booking, bound to the journal's hash, in the order they happened.
    let audited: Vec<(String, String, Option<String>)> = client
        .query("SELECT action, actor, convert_from(record, 'UTF8')::jsonb ->> 'plan' FROM audit_log ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        audited,
        [
            ("recon.break.propose".to_owned(), "ana".to_owned(), Some(hash.clone())),
            ("ledger.correction.book".to_owned(), "bob".to_owned(), Some(hash.clone()))
        ]
    );

    // The database holds the binding on its own: a resolution without its booked correction, a correction whose
    // entries are not the approved ones, and entries added to a booked correction later (which verify finds).
    let mut raw = pool.get().await.unwrap();
    let tx = raw.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "INSERT INTO recon_breaks (break_id, kind, psp, detail) VALUES ('b2', 'fee_mismatch', 'stripe', 'd');
         INSERT INTO recon_resolutions (break_id, resolution, reason, ticket, actor, journal_sha256, approved_by)
         VALUES ('b2', 'fixed_by_booking', 'r', 'T', 'ana', '{hash}', 'bob')"
    ))
    .await
    .unwrap();
    let unbooked = tx.commit().await.unwrap_err();
    assert!(format!("{unbooked:?}").contains("without its booked correction"), "{unbooked:?}");
    let tx = raw.transaction().await.unwrap();
    let correction = good.correction("recon_break:other").unwrap();
    let approval =
        tally_ledger::corrections::Approval { proposed_by: "ana", approved_by: "bob", reason: "r", ticket: "T" };
    let other = tally_ledger::corrections::book(&tx, &correction, approval).await.unwrap();
    tx.execute(
        "INSERT INTO entries (journal_id, account, currency, amount_minor, correction_id, processor_version)
         VALUES ($1, 'psp_fees', 'EUR', 5, $2, 'x'), ($1, 'cash:stripe', 'EUR', -5, $2, 'x')",
        &[&other.journal_id, &other.correction_id],
    )
    .await
    .unwrap();
    let tampered = tx.commit().await.unwrap_err();
    assert!(format!("{tampered:?}").contains("not the approved journal"), "{tampered:?}");
    let append = format!(
        "INSERT INTO entries (journal_id, account, currency, amount_minor, correction_id, processor_version)
         VALUES ({j}, 'psp_fees', 'EUR', 5, '{c}', 'x'), ({j}, 'cash:stripe', 'EUR', -5, '{c}', 'x')",
        j = booked.journal_id,
        c = booked.correction_id
    );
    let later = raw.batch_execute(&append).await.unwrap_err();
    assert!(format!("{later:?}").contains("not the approved journal"), "{later:?}");
    // An entry naming another journal's correction (or fact) is refused outright.
    let misnamed = raw
        .batch_execute(&format!(
            "INSERT INTO entries (journal_id, account, currency, amount_minor, fact_key, topic, kafka_partition,
                kafka_offset, processor_version) VALUES ({}, 'psp_fees', 'EUR', 5, gen_random_uuid(), 't', 0, 0, 'x')",
            booked.journal_id
        ))
        .await
        .unwrap_err();
    assert!(format!("{misnamed:?}").contains("another fact or correction"), "{misnamed:?}");
    // With the triggers switched off (an administrator), the append goes in, and verify finds it.
    raw.batch_execute(&format!(
        "ALTER TABLE entries DISABLE TRIGGER USER; {append}; ALTER TABLE entries ENABLE TRIGGER USER;"
    ))
    .await
    .unwrap();
    let verified = tally_ledger::verify(&pool, "tally-ledger").await.unwrap();
    assert!(
        verified.correction_problems.iter().any(|p| p.contains("do not hash to the approved")),
        "{:?}",
        verified.correction_problems
    );
    assert!(!verified.is_clean());
}
