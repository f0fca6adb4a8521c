//! The payments API's database guards, against the real PostgreSQL of the stack (`make test` starts it): the state
//! machine, the amount bounds, one open PSP operation per payment, the outbox at commit, and the idempotency keys.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::json;
use tally_api::idempotency::{self, Begin, Held, Request};
use tally_api::merchants::{self, Merchant};
use tally_api::model::{CaptureMethod, OperationKind, OperationState, Payment, Status};
use tally_api::store::{self, Change, NewPayment, StoreError};
use tally_domain::Psp;
use uuid::Uuid;

async fn db() -> Pool {
    tally_testkit::database("api_store").await.1
}

async fn merchant(pool: &Pool, id: &str) -> Merchant {
    let m = Merchant {
        merchant_id: id.into(),
        psps: vec![Psp::Stripe, Psp::Adyen],
        failover: true,
        stripe_account: Some("acct_1TestMerchant".into()),
        adyen_merchant_account: Some("TallyTestECOM".into()),
        rate_per_second: 100,
    };
    merchants::create(&pool.get().await.expect("conn"), &m).await.expect("merchant");
    m
}

async fn new_payment(pool: &Pool, merchant: &str, amount: i64) -> Payment {
    let mut client = pool.get().await.expect("conn");
    let tx = client.transaction().await.expect("tx");
    let id = Uuid::from_u128(rand_u128());
    let created = store::create(
        &tx,
        &NewPayment {
            id,
            merchant_id: merchant,
            merchant_reference: "order-1",
            amount,
            currency: "EUR",
            capture_method: CaptureMethod::Manual,
            psp: Psp::Stripe,
            secrets: vec![1, 2, 3],
            secrets_key: "k1",
        },
    )
    .await
    .expect("created");
    tx.commit().await.expect("commit");
    created
}

fn rand_u128() -> u128 {
    rand::random()
}

/// `store::transition` in a transaction of its own.
async fn change(pool: &Pool, from: &Payment, change: Change) -> Result<Payment, StoreError> {
    let mut c = pool.get().await.expect("conn");
    let tx = c.transaction().await.expect("tx");
    let changed = store::transition(&tx, from, change).await?;
    tx.commit().await?;
    Ok(changed)
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

fn to(status: Status) -> Change {
    Change { status: Some(status), ..Change::default() }
}

fn refused(r: Result<Payment, StoreError>) -> String {
    match r {
        Err(StoreError::Refused(m)) => m,
        other => panic!("expected a refusal by the database, got {other:?}"),
    }
}

#[tokio::test]
async fn the_database_refuses_every_illegal_transition_and_amount() {
    let pool = db().await;
    merchant(&pool, "m_guard").await;
    let client = pool.get().await.expect("conn");
    let p = new_payment(&pool, "m_guard", 1_000).await;
    assert_eq!((p.status, p.version), (Status::Created, 1));

    // created → refunded is not in the table.
    assert!(refused(change(&pool, &p, to(Status::Refunded)).await).contains("illegal transition"));
    // Authorizing more than the amount breaks a CHECK.
    let over = Change { authorized_amount: Some(1_001), ..to(Status::Authorized) };
    assert!(refused(change(&pool, &p, over).await).contains("authorized_within_amount"));
    let p = change(&pool, &p, Change { authorized_amount: Some(1_000), ..to(Status::Authorized) })
        .await
        .expect("created → authorized");
    // Capturing more than was authorized, refunding more than was captured: refused.
    let over = Change { captured_amount: Some(1_001), ..to(Status::Captured) };
    assert!(refused(change(&pool, &p, over).await).contains("captured_within_authorized"));
    let p = change(&pool, &p, Change { captured_amount: Some(600), ..to(Status::Captured) })
        .await
        .expect("authorized → captured (partially)");
    let over = Change { refunded_amount: Some(601), ..to(Status::Refunded) };
    assert!(refused(change(&pool, &p, over).await).contains("refunded_within_captured"));
    // Amounts never shrink, even within a status.
    let shrink = Change { captured_amount: Some(500), ..Change::default() };
    assert!(refused(change(&pool, &p, shrink).await).contains("never shrink"));
    // A stale version or status changes nothing.
    let mut stale = p.clone();
    stale.version -= 1;
    assert!(matches!(change(&pool, &stale, to(Status::Refunded)).await, Err(StoreError::Stale(_))));

    // Canceled is final: nothing changes it, not even a raw statement that skips the store.
    let q = new_payment(&pool, "m_guard", 500).await;
    let q =
        change(&pool, &q, Change { authorized_amount: Some(500), ..to(Status::Authorized) }).await.expect("authorized");
    let q = change(&pool, &q, to(Status::Canceled)).await.expect("authorized → canceled");
    assert!(refused(change(&pool, &q, to(Status::Authorized)).await).contains("final"));
    let raw = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let c = pool.get().await.expect("conn");
            db_message(&c.execute(sql, &[&q.id]).await.expect_err("the trigger refuses it"))
        }
    };
    assert!(raw("UPDATE api_payments SET failure_code = 'x', version = version + 1 WHERE payment_id = $1")
        .await
        .contains("final"));
    assert!(raw("DELETE FROM api_payments WHERE payment_id = $1").await.contains("never deleted"));

    // Every change advances the version by one, and must write its outbox row in the same transaction.
    let r = new_payment(&pool, "m_guard", 700).await;
    let c = pool.get().await.expect("conn");
    let e = c
        .execute("UPDATE api_payments SET status = 'pending', version = version + 2 WHERE payment_id = $1", &[&r.id])
        .await
        .expect_err("a skipped version");
    assert!(db_message(&e).contains("advance by one"), "{e}");
    let e = c
        .execute("UPDATE api_payments SET status = 'pending', version = version + 1 WHERE payment_id = $1", &[&r.id])
        .await
        .expect_err("no outbox row at commit");
    assert!(e.as_db_error().map(|d| d.code().code()) == Some("TL005"), "{e}");

    // The outbox holds one state row per version of each payment the store changed.
    let rows: i64 = client
        .query_one("SELECT count(*) FROM api_payment_outbox WHERE payment_id = $1 AND fact_key IS NULL", &[&p.id])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, i64::from(p.version));
}

#[tokio::test]
async fn of_two_concurrent_captures_exactly_one_starts_and_no_second_operation_opens_while_one_is_unresolved() {
    let pool = db().await;
    merchant(&pool, "m_race").await;
    let client = pool.get().await.expect("conn");
    let p = new_payment(&pool, "m_race", 2_000).await;
    let p = change(&pool, &p, Change { authorized_amount: Some(2_000), ..to(Status::Authorized) })
        .await
        .expect("authorized");

    for round in 0..20 {
        let start = |pool: Pool, p: Payment| async move {
            let mut c = pool.get().await.expect("conn");
            let tx = c.transaction().await.expect("tx");
            let r = store::start_operation(&tx, &p, Uuid::from_u128(rand_u128()), OperationKind::Capture, 1_000).await;
            if r.is_ok() {
                tx.commit().await.expect("commit");
            }
            r
        };
        let (a, b) = tokio::join!(start(pool.clone(), p.clone()), start(pool.clone(), p.clone()));
        let won: Vec<_> = [&a, &b].into_iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one capture starts ({a:?}, {b:?})");
        assert!([&a, &b].iter().any(|r| matches!(r, Err(StoreError::Busy(_)))), "round {round}: the other is busy");
        // Unresolved (the PSP never answered) still blocks any other operation, a cancel included.
        let op = won[0].id;
        store::settle_operation(&client, op, OperationState::Unresolved, None, None).await.expect("unresolved");
        let blocked =
            store::start_operation(&client, &p, Uuid::from_u128(rand_u128()), OperationKind::Cancel, 2_000).await;
        assert!(matches!(blocked, Err(StoreError::Busy(_))), "round {round}: {blocked:?}");
        // Resolved, the next may start; an operation never moves back.
        store::settle_operation(&client, op, OperationState::Failed, None, Some(("card_declined", None)))
            .await
            .expect("failed");
        let back = store::settle_operation(&client, op, OperationState::Started, None, None).await;
        assert!(back.is_err(), "round {round}: failed → started is refused");
    }

    // Two changes from the same version: the second is stale.
    let (a, b) = tokio::join!(
        change(&pool, &p, Change { captured_amount: Some(1_000), ..to(Status::Captured) }),
        change(&pool, &p, to(Status::Canceled)),
    );
    assert_eq!(
        [&a, &b].iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one change from version {} lands: {a:?} {b:?}",
        p.version
    );
    assert!([&a, &b].iter().any(|r| matches!(r, Err(StoreError::Stale(_)))));
}

#[tokio::test]
async fn refunds_never_add_up_to_more_than_was_captured() {
    let pool = db().await;
    merchant(&pool, "m_refund").await;

    let p = new_payment(&pool, "m_refund", 1_000).await;
    let p = change(
        &pool,
        &p,
        Change { authorized_amount: Some(1_000), captured_amount: Some(800), ..to(Status::Captured) },
    )
    .await
    .expect("captured 800 of 1000");
    let refund = |amount| {
        let (pool, p) = (pool.clone(), p.clone());
        async move {
            let c = pool.get().await.expect("conn");
            let r = store::start_operation(&c, &p, Uuid::from_u128(rand_u128()), OperationKind::Refund, amount).await?;
            store::settle_operation(&c, r.id, OperationState::Succeeded, Some("re_1"), None).await
        }
    };
    refund(500).await.expect("500 of 800");
    let e = refund(301).await.expect_err("801 of 800");
    assert!(matches!(&e, StoreError::Refused(m) if m.contains("exceed")), "{e:?}");
    refund(300).await.expect("the last 300");
}

fn token(b: &Begin) -> Uuid {
    match b {
        Begin::New { token } | Begin::Resume { token, .. } => *token,
        other => panic!("expected the key to be held, got {other:?}"),
    }
}

#[tokio::test]
async fn an_idempotency_key_runs_once_replays_its_response_and_resumes_after_a_crash() {
    let pool = db().await;
    merchant(&pool, "m_key").await;
    merchant(&pool, "m_other").await;
    let client = pool.get().await.expect("conn");
    let body = json!({"amount": 1000, "currency": "EUR"});
    let other_body = json!({"amount": 1001, "currency": "EUR"});
    let req = |merchant, key, body| Request { merchant, key, method: "POST", path: "/v1/payments", body };
    let lease = Duration::from_secs(30);

    let first = idempotency::begin(&client, &req("m_key", "k1", &body), lease).await.expect("begin");
    let held = Held { merchant: "m_key", key: "k1", token: token(&first) };
    // While the first runs: the same request is in use, another request with the key is a reuse.
    assert_eq!(idempotency::begin(&client, &req("m_key", "k1", &body), lease).await.expect("begin"), Begin::InUse);
    assert_eq!(
        idempotency::begin(&client, &req("m_key", "k1", &other_body), lease).await.expect("begin"),
        Begin::Reused
    );
    // Keys are per merchant: another merchant's k1 is its own.
    let other = idempotency::begin(&client, &req("m_other", "k1", &other_body), lease).await.expect("b");
    assert!(matches!(other, Begin::New { .. }), "{other:?}");

    // Only the holder of the lock stores the response.
    let stranger = Held { token: Uuid::from_u128(rand_u128()), ..held };
    assert!(!idempotency::finish(&client, &stranger, 500, b"{}").await.expect("finish"));
    let response = br#"{"id":"pay_x","status":"authorized"}"#;
    assert!(idempotency::finish(&client, &held, 201, response).await.expect("finish"));
    assert_eq!(
        idempotency::begin(&client, &req("m_key", "k1", &body), lease).await.expect("begin"),
        Begin::Replay { status: 201, body: response.to_vec() }
    );
    assert_eq!(
        idempotency::begin(&client, &req("m_key", "k1", &other_body), lease).await.expect("begin"),
        Begin::Reused
    );

    // A request that crashed after making its payment: once the lease is over, exactly one retry takes over and
    // learns what the first made; the crashed request can no longer record or answer anything.
    let short = Duration::from_millis(200);
    let crashed = idempotency::begin(&client, &req("m_key", "k2", &body), short).await.expect("begin");
    let crashed = Held { merchant: "m_key", key: "k2", token: token(&crashed) };
    let p = new_payment(&pool, "m_key", 1_000).await;
    let op = Uuid::from_u128(rand_u128());
    idempotency::remember(&client, &crashed, p.id, Some(op)).await.expect("remember");
    assert_eq!(idempotency::begin(&client, &req("m_key", "k2", &body), lease).await.expect("begin"), Begin::InUse);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (a, b) = tokio::join!(
        async { idempotency::begin(&pool.get().await.expect("c"), &req("m_key", "k2", &body), lease).await },
        async { idempotency::begin(&pool.get().await.expect("c"), &req("m_key", "k2", &body), lease).await },
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    let resumed =
        |b: &Begin| matches!(b, Begin::Resume { payment: Some(x), operation: Some(o), .. } if *x == p.id && *o == op);
    assert!(
        (resumed(&a) && b == Begin::InUse) || (resumed(&b) && a == Begin::InUse),
        "one retry resumes, the other waits: {a:?} {b:?}"
    );
    let late = idempotency::remember(&client, &crashed, Uuid::from_u128(rand_u128()), None).await;
    assert!(matches!(late, Err(StoreError::Stale(_))), "the stopped request lost the key: {late:?}");
    assert!(!idempotency::finish(&client, &crashed, 201, b"{}").await.expect("finish"));

    // A key released (nothing was made) runs again; one that made a payment is never released.
    let k3 = idempotency::begin(&client, &req("m_key", "k3", &body), lease).await.expect("begin");
    idempotency::release(&client, &Held { merchant: "m_key", key: "k3", token: token(&k3) }).await.expect("release");
    assert!(matches!(
        idempotency::begin(&client, &req("m_key", "k3", &body), lease).await.expect("b"),
        Begin::New { .. }
    ));
    let holder = if resumed(&a) { token(&a) } else { token(&b) };
    idempotency::release(&client, &Held { merchant: "m_key", key: "k2", token: holder }).await.expect("release");
    assert_eq!(idempotency::begin(&client, &req("m_key", "k2", &body), lease).await.expect("begin"), Begin::InUse);
}

#[tokio::test]
async fn a_key_is_found_by_its_hash_only_and_stops_working_when_revoked() {
    let pool = db().await;
    merchant(&pool, "m_keys").await;
    let client = pool.get().await.expect("conn");
    let key = merchants::create_key(&client, "m_keys").await.expect("key");
    let key = key.expose().clone();
    assert!(key.starts_with("tally_sk_"));
    let found = merchants::authenticate(&client, &key).await.expect("auth");
    assert_eq!(found.map(|m| m.merchant_id), Some("m_keys".to_owned()));
    // Nothing of the key but its hash is stored.
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE position($1::bytea in key_sha256) > 0 OR key_id = $2",
            &[&key.as_bytes(), &key],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0);
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('A') { 'B' } else { 'A' });
    assert!(merchants::authenticate(&client, &forged).await.expect("auth").is_none());
    assert!(merchants::authenticate(&client, "Bearer nonsense").await.expect("auth").is_none());
    let key_id = &key["tally_sk_".len().."tally_sk_".len() + 16];
    assert!(merchants::revoke_key(&client, key_id).await.expect("revoke"));
    assert!(merchants::authenticate(&client, &key).await.expect("auth").is_none());
    assert!(merchants::create_key(&client, "m_nobody").await.is_err());
}
