//! The payments API's PostgreSQL side. The database is the guard (`migrations/0019_payments_api.sql`): a change
//! is one `UPDATE … WHERE status = $from AND version = $v` that the trigger checks against the transition table, and
//! it writes its outbox rows in the same transaction (a commit-time trigger refuses a change without them).

use deadpool_postgres::{GenericClient, Transaction};
use tally_domain::{PaymentEvent, Psp};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::model::{CaptureMethod, Operation, OperationKind, OperationState, Payment, Status};

/// The topic of the API's state changes (without prefix). Key: the payment's public id; value: the resource JSON.
pub const STATE_TOPIC: &str = "payments.api.v1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The payment changed since it was read (another request, the resolver, a webhook): read it again.
    #[error("payment {0} changed concurrently")]
    Stale(Uuid),
    /// Another PSP call of this payment is open (started or unresolved): nothing else may start until it resolves.
    #[error("payment {0} has a PSP operation in progress")]
    Busy(Uuid),
    /// The database refused the change: an illegal transition, a final status, an amount out of bounds.
    #[error("{0}")]
    Refused(String),
    #[error("encoding a fact for the outbox: {0}")]
    Encode(String),
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] tally_postgres::PgError),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e.into())
    }
}

/// A refusal by one of the guards (the `TL…` SQLSTATEs of the migration and the CHECK constraints), as a message.
fn refusal(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let code = db.code().code();
    (code.starts_with("TL") || *db.code() == SqlState::CHECK_VIOLATION).then(|| match db.constraint() {
        Some(constraint) => format!("{} ({constraint})", db.message()),
        None => db.message().to_owned(),
    })
}

fn classify(e: tokio_postgres::Error) -> StoreError {
    match refusal(&e) {
        Some(message) => StoreError::Refused(message),
        None => StoreError::Db(e),
    }
}

const PAYMENT_COLUMNS: &str = "payment_id, merchant_id, merchant_reference, amount, currency, capture_method, psp, \
     status::text, version, authorized_amount, captured_amount, refunded_amount, psp_payment_id, psp_charge_id, \
     failure_code, failure_message, created_at, updated_at";

fn payment(row: &Row) -> Payment {
    let parse = |i: usize| -> String { row.get(i) };
    Payment {
        id: row.get(0),
        merchant_id: row.get(1),
        merchant_reference: row.get(2),
        amount: row.get(3),
        currency: row.get(4),
        capture_method: parse(5).parse().expect("the CHECK constraint bounds capture_method"),
        psp: parse(6).parse().expect("the CHECK constraint bounds psp"),
        status: parse(7).parse().expect("api_payment_status is an enum"),
        version: row.get(8),
        authorized_amount: row.get(9),
        captured_amount: row.get(10),
        refunded_amount: row.get(11),
        psp_payment_id: row.get(12),
        psp_charge_id: row.get(13),
        failure_code: row.get(14),
        failure_message: row.get(15),
        created_at: row.get(16),
        updated_at: row.get(17),
    }
}

const OPERATION_COLUMNS: &str =
    "operation_id, payment_id, kind::text, psp, amount, state::text, psp_reference, failure_code, failure_message, tries";

fn operation(row: &Row) -> Operation {
    let parse = |i: usize| -> String { row.get(i) };
    Operation {
        id: row.get(0),
        payment_id: row.get(1),
        kind: parse(2).parse().expect("api_payment_operation_kind is an enum"),
        psp: parse(3).parse().expect("the CHECK constraint bounds psp"),
        amount: row.get(4),
        state: parse(5).parse().expect("api_payment_operation_state is an enum"),
        psp_reference: row.get(6),
        failure_code: row.get(7),
        failure_message: row.get(8),
        tries: row.get(9),
    }
}

/// A payment about to be created.
pub struct NewPayment<'a> {
    pub id: Uuid,
    pub merchant_id: &'a str,
    pub merchant_reference: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub capture_method: CaptureMethod,
    pub psp: Psp,
    /// The sealed secrets (payment-method token, customer token) and the id of the key that sealed them.
    pub secrets: Vec<u8>,
    pub secrets_key: &'a str,
}

/// Inserts a payment (`created`, version 1) with its first outbox row. In a transaction: the database checks at
/// commit that every version of a payment has its outbox row.
pub async fn create(tx: &Transaction<'_>, new: &NewPayment<'_>) -> Result<Payment, StoreError> {
    let sql = format!(
        "INSERT INTO api_payments (payment_id, merchant_id, merchant_reference, amount, currency, capture_method, psp,
                               status, version, authorized_amount, captured_amount, refunded_amount,
                               secrets, secrets_key, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'created', 1, 0, 0, 0, $8, $9, now(), now())
         RETURNING {PAYMENT_COLUMNS}"
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &new.id,
                &new.merchant_id,
                &new.merchant_reference,
                &new.amount,
                &new.currency,
                &new.capture_method.as_str(),
                &new.psp.as_str(),
                &new.secrets,
                &new.secrets_key,
            ],
        )
        .await
        .map_err(classify)?;
    let created = payment(&row);
    outbox(tx, &created, &[]).await?;
    Ok(created)
}

/// The payment `id` of `merchant`, if it is one of theirs (another merchant's payment is not found, I7-style
/// isolation: the query names the merchant).
pub async fn load(client: &impl GenericClient, merchant: &str, id: Uuid) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM api_payments WHERE payment_id = $1 AND merchant_id = $2");
    Ok(client.query_opt(&sql, &[&id, &merchant]).await?.as_ref().map(payment))
}

/// The same, locked for the transaction (`FOR UPDATE`): changes of one payment queue behind each other.
pub async fn lock(client: &impl GenericClient, merchant: &str, id: Uuid) -> Result<Option<Payment>, StoreError> {
    let sql =
        format!("SELECT {PAYMENT_COLUMNS} FROM api_payments WHERE payment_id = $1 AND merchant_id = $2 FOR UPDATE");
    Ok(client.query_opt(&sql, &[&id, &merchant]).await?.as_ref().map(payment))
}

/// A page of the merchant's payments, newest first, after the payment `after` (keyset pagination).
pub async fn list(
    client: &impl GenericClient,
    merchant: &str,
    status: Option<Status>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Payment>, StoreError> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM api_payments p
          WHERE merchant_id = $1
            AND ($2::text IS NULL OR status::text = $2)
            AND ($3::uuid IS NULL OR (created_at, payment_id) < (
                    SELECT created_at, payment_id FROM api_payments WHERE payment_id = $3 AND merchant_id = $1))
          ORDER BY created_at DESC, payment_id DESC
          LIMIT $4"
    );
    let status = status.map(Status::as_str);
    Ok(client.query(&sql, &[&merchant, &status, &after, &limit]).await?.iter().map(payment).collect())
}

/// What a change sets. Amounts are the new totals (the trigger refuses a shrinking one).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub status: Option<Status>,
    pub authorized_amount: Option<i64>,
    pub captured_amount: Option<i64>,
    pub refunded_amount: Option<i64>,
    pub psp_payment_id: Option<String>,
    pub psp_charge_id: Option<String>,
    pub failure: Option<(String, Option<String>)>,
    /// The facts the change learned from the PSP, for the ledger (the same fact keys as the PSP's webhooks).
    pub facts: Vec<PaymentEvent>,
}

/// Applies `change` to `from` in one guarded statement: `WHERE status = $from AND version = $v`. Zero rows means
/// someone else changed the payment first ([`StoreError::Stale`]); the trigger refuses an illegal transition
/// ([`StoreError::Refused`]). Writes the outbox rows of the new version in the same transaction.
pub async fn transition(tx: &Transaction<'_>, from: &Payment, change: Change) -> Result<Payment, StoreError> {
    let sql = format!(
        "UPDATE api_payments SET
                status = coalesce($3::text::api_payment_status, status),
                version = version + 1,
                authorized_amount = coalesce($4, authorized_amount),
                captured_amount = coalesce($5, captured_amount),
                refunded_amount = coalesce($6, refunded_amount),
                psp_payment_id = coalesce($7, psp_payment_id),
                psp_charge_id = coalesce($8, psp_charge_id),
                failure_code = coalesce($9, failure_code),
                failure_message = coalesce($10, failure_message),
                updated_at = now()
          WHERE payment_id = $1 AND version = $2 AND status = $11::text::api_payment_status
          RETURNING {PAYMENT_COLUMNS}"
    );
    let (code, message) = change.failure.clone().unzip();
    let row = tx
        .query_opt(
            &sql,
            &[
                &from.id,
                &from.version,
                &change.status.map(Status::as_str),
                &change.authorized_amount,
                &change.captured_amount,
                &change.refunded_amount,
                &change.psp_payment_id,
                &change.psp_charge_id,
                &code,
                &message.flatten(),
                &from.status.as_str(),
            ],
        )
        .await
        .map_err(classify)?;
    let Some(row) = row else { return Err(StoreError::Stale(from.id)) };
    let changed = payment(&row);
    outbox(tx, &changed, &change.facts).await?;
    Ok(changed)
}

/// The outbox rows of one version of a payment: its state, then each fact (a fact already in the outbox — the
/// same fact learned twice — is not written again).
async fn outbox(tx: &impl GenericClient, payment: &Payment, facts: &[PaymentEvent]) -> Result<(), StoreError> {
    let key = crate::model::public_id(payment.id);
    let value = serde_json::to_vec(&payment.resource()).map_err(|e| StoreError::Encode(e.to_string()))?;
    tx.execute(
        "INSERT INTO api_payment_outbox (payment_id, payment_version, topic, record_key, record_value)
         VALUES ($1, $2, $3, $4, $5)",
        &[&payment.id, &payment.version, &STATE_TOPIC, &key.as_bytes(), &value],
    )
    .await?;
    for fact in facts {
        let value = tally_contracts::encode_payment_event(fact, None).map_err(|e| StoreError::Encode(e.to_string()))?;
        tx.execute(
            "INSERT INTO api_payment_outbox (payment_id, payment_version, topic, record_key, record_value, fact_key)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (fact_key) WHERE fact_key IS NOT NULL DO NOTHING",
            &[
                &payment.id,
                &payment.version,
                &tally_kafka::topic_for(fact.kind),
                &fact.payment_id.as_bytes(),
                &value,
                &fact.fact_key().0,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Starts a PSP call of the payment: refused with [`StoreError::Busy`] while another is open (the unique index
/// `api_payment_operations_one_open`), with [`StoreError::Refused`] when a refund would exceed what was captured.
pub async fn start_operation(
    tx: &impl GenericClient,
    payment: &Payment,
    id: Uuid,
    kind: OperationKind,
    amount: i64,
) -> Result<Operation, StoreError> {
    let sql = format!(
        "INSERT INTO api_payment_operations (operation_id, payment_id, kind, psp, amount, state, tries, created_at,
                                         updated_at)
         VALUES ($1, $2, $3::text::api_payment_operation_kind, $4, $5, 'started', 0, now(), now())
         RETURNING {OPERATION_COLUMNS}"
    );
    match tx.query_one(&sql, &[&id, &payment.id, &kind.as_str(), &payment.psp.as_str(), &amount]).await {
        Ok(row) => Ok(operation(&row)),
        Err(e) if e.as_db_error().and_then(|d| d.constraint()) == Some("api_payment_operations_one_open") => {
            Err(StoreError::Busy(payment.id))
        }
        Err(e) => Err(classify(e)),
    }
}

/// Counts one more request sent for the operation.
pub async fn count_try(client: &impl GenericClient, operation: Uuid) -> Result<i32, StoreError> {
    let row = client
        .query_one(
            "UPDATE api_payment_operations SET tries = tries + 1, updated_at = now() WHERE operation_id = $1
             RETURNING tries",
            &[&operation],
        )
        .await
        .map_err(classify)?;
    Ok(row.get(0))
}

/// Moves an operation to `state` (the trigger allows forward moves only).
pub async fn settle_operation(
    tx: &impl GenericClient,
    id: Uuid,
    state: OperationState,
    psp_reference: Option<&str>,
    failure: Option<(&str, Option<&str>)>,
) -> Result<Operation, StoreError> {
    let sql = format!(
        "UPDATE api_payment_operations SET state = $2::text::api_payment_operation_state,
                psp_reference = coalesce($3, psp_reference), failure_code = coalesce($4, failure_code),
                failure_message = coalesce($5, failure_message), updated_at = now()
          WHERE operation_id = $1
          RETURNING {OPERATION_COLUMNS}"
    );
    let (code, message) = failure.unzip();
    let row = tx
        .query_one(&sql, &[&id, &state.as_str(), &psp_reference, &code, &message.flatten()])
        .await
        .map_err(classify)?;
    Ok(operation(&row))
}

/// The payment's operations, oldest first.
pub async fn operations(client: &impl GenericClient, payment: Uuid) -> Result<Vec<Operation>, StoreError> {
    let sql = format!("SELECT {OPERATION_COLUMNS} FROM api_payment_operations WHERE payment_id = $1 ORDER BY created_at, operation_id");
    Ok(client.query(&sql, &[&payment]).await?.iter().map(operation).collect())
}

/// Open operations last touched before `before`: the resolver's work (a request that crashed mid-call leaves its
/// operation `started`; one the PSP never answered is `unresolved`).
pub async fn open_operations(
    client: &impl GenericClient,
    before: OffsetDateTime,
    born_after: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(Operation, String)>, StoreError> {
    let sql = format!(
        "SELECT {}, p.merchant_id FROM api_payment_operations o JOIN api_payments p USING (payment_id)
          WHERE o.state IN ('started', 'unresolved') AND o.updated_at < $1 AND o.created_at > $3
            AND p.status <> 'requires_review'
          ORDER BY o.updated_at LIMIT $2",
        OPERATION_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
    );
    Ok(client.query(&sql, &[&before, &limit, &born_after]).await?.iter().map(|r| (operation(r), r.get(10))).collect())
}

/// The sealed secrets of a payment and the id of their key.
pub async fn secrets(client: &impl GenericClient, payment: Uuid) -> Result<(Vec<u8>, String), StoreError> {
    let row =
        client.query_one("SELECT secrets, secrets_key FROM api_payments WHERE payment_id = $1", &[&payment]).await?;
    Ok((row.get(0), row.get(1)))
}
