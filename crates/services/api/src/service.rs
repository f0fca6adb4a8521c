//! What a request does, in the order it does it, and the one place that sends a PSP operation and applies the
//! answer ([`Api::drive`]) — used by a request, by a request resuming a crashed one, and by the resolver alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tally_domain::{Psp, Secret};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::ApiConfig;
use crate::connector::{Answer, BreakerState, Call, Connectors, PspModification, PspPayment, PspStatus};
use crate::idempotency;
use crate::merchants::Merchant;
use crate::model::{CaptureMethod, Operation, OperationKind, OperationState, Payment, Status};
use crate::store::{self, Change, NewPayment, StoreError};
use crate::vault::Vault;

pub struct Api {
    pub config: ApiConfig,
    pub pool: Pool,
    pub vault: Vault,
    pub connectors: Connectors,
    pub metrics: Metrics,
    /// The listener's TLS 1.3 configuration, read from `[api.tls]` at start-up.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub replays: AtomicU64,
    pub resolved: AtomicU64,
    pub unresolved: AtomicU64,
    pub failovers: AtomicU64,
}

impl Metrics {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request's refusal before it acted (nothing stored, the idempotency key released).
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl Refusal {
    pub fn new(status: u16, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, kind, code, message: message.into(), param: None }
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy(_) => Refusal::new(
                409,
                "invalid_request_error",
                "payment_busy",
                "another operation of this payment is still with the PSP; retry once it resolves",
            ),
            StoreError::Refused(m) => Refusal::new(409, "invalid_request_error", "payment_state", m),
            StoreError::Stale(_) => {
                Refusal::new(409, "invalid_request_error", "payment_changed", "the payment changed meanwhile; retry")
            }
            other => {
                tracing::error!(error = %other, "payments API store");
                Refusal::new(503, "api_error", "storage_unavailable", "the payment store is unavailable; retry")
            }
        }
    }
}

/// A payment to create, validated.
pub struct Create {
    pub amount: i64,
    pub currency: String,
    pub merchant_reference: String,
    pub payment_method: Secret<String>,
    /// The merchant's token of its customer (Adyen's `shopperReference`, required for a stored payment method).
    pub customer: Option<Secret<String>>,
    pub capture_method: CaptureMethod,
    pub psp: Option<Psp>,
}

pub use crate::idempotency::Held;

/// The outcome of a request that acted: the HTTP status, the body (the payment, or for an operation the PSP
/// refused, an error that names the PSP's code and carries the payment) and the payment after it.
pub struct Done {
    pub status: u16,
    pub body: Vec<u8>,
    pub payment: Payment,
}

/// What the API keeps about the customer of a payment, sealed in one value (`api_payments.secrets`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Secrets {
    payment_method: String,
    customer: Option<String>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Api {
    /// Which PSP a new payment goes to: the requested one, else the merchant's first whose breaker lets calls
    /// through, falling over to the next only when the merchant allows it.
    pub fn route(&self, merchant: &Merchant, wanted: Option<Psp>) -> Result<Psp, Refusal> {
        let candidates: Vec<Psp> = match wanted {
            Some(p) if merchant.psps.contains(&p) => vec![p],
            Some(p) => {
                return Err(Refusal::new(
                    403,
                    "invalid_request_error",
                    "psp_not_allowed",
                    format!("merchant {} is not routed to {p}", merchant.merchant_id),
                )
                .param("psp"))
            }
            None if merchant.failover => merchant.psps.clone(),
            None => merchant.psps.iter().take(1).copied().collect(),
        };
        for (i, psp) in candidates.iter().enumerate() {
            let open = match self.connectors.breaker(*psp) {
                None => true,
                Some(b) => b.state() == BreakerState::Open,
            };
            if !open {
                if i > 0 {
                    Metrics::add(&self.metrics.failovers);
                }
                return Ok(*psp);
            }
        }
        Err(Refusal::new(
            503,
            "api_error",
            "psp_unavailable",
            "no PSP this payment may go to is available (circuit open or not configured); retry later",
        ))
    }

    /// `POST /v1/payments` after its key was claimed: creates the payment and its authorization in one
    /// transaction (remembered by the key), then drives the authorization.
    pub async fn create(&self, merchant: &Merchant, held: &Held<'_>, req: Create) -> Result<Done, Refusal> {
        let psp = self.route(merchant, req.psp)?;
        if psp == Psp::Adyen && req.customer.is_none() {
            return Err(Refusal::new(
                422,
                "invalid_request_error",
                "customer_required",
                "Adyen charges a stored payment method only with its shopper: send `customer`",
            )
            .param("customer"));
        }
        let id = crate::model::new_payment_id();
        let secrets = Secrets {
            payment_method: req.payment_method.expose().clone(),
            customer: req.customer.as_ref().map(|c| c.expose().clone()),
        };
        let plain = Secret::new(serde_json::to_vec(&secrets).expect("secrets serialize"));
        let (sealed, key_id) = self.vault.seal(plain.expose(), id.as_bytes());
        let op_id = Uuid::from_u128(rand::random());
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let payment = store::create(
            &tx,
            &NewPayment {
                id,
                merchant_id: &merchant.merchant_id,
                merchant_reference: &req.merchant_reference,
                amount: req.amount,
                currency: &req.currency,
                capture_method: req.capture_method,
                psp,
                secrets: sealed,
                secrets_key: &key_id,
            },
        )
        .await?;
        let op = store::start_operation(&tx, &payment, op_id, OperationKind::Authorize, req.amount).await?;
        idempotency::remember(&tx, held, payment.id, Some(op.id)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.drive(merchant, payment, op, Some(held)).await
    }

    /// Capture, refund or cancel after the key was claimed: checks the payment allows it, starts the operation
    /// (the database refuses a second open one), then drives it.
    pub async fn modify(
        &self,
        merchant: &Merchant,
        held: &Held<'_>,
        id: Uuid,
        kind: OperationKind,
        amount: Option<i64>,
    ) -> Result<Done, Refusal> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let Some(payment) = store::lock(&tx, &merchant.merchant_id, id).await? else {
            return Err(not_found());
        };
        let amount = match kind {
            OperationKind::Capture => {
                let left = payment.authorized_amount - payment.captured_amount;
                check_state(&payment, &[Status::Authorized, Status::Captured], "captured")?;
                let amount = amount.expect("the handler requires it");
                if payment.psp == Psp::Stripe && payment.status == Status::Captured {
                    return Err(Refusal::new(
                        409,
                        "invalid_request_error",
                        "payment_state",
                        "Stripe releases what a capture leaves uncaptured: a Stripe payment is captured once",
                    ));
                }
                if payment.capture_method == CaptureMethod::Automatic {
                    return Err(Refusal::new(
                        409,
                        "invalid_request_error",
                        "capture_automatic",
                        "the payment is captured automatically",
                    ));
                }
                if amount > left {
                    return Err(too_large(amount, left, "capturable"));
                }
                amount
            }
            OperationKind::Refund => {
                check_state(&payment, &[Status::Captured, Status::Refunded], "refunded")?;
                let amount = amount.expect("the handler requires it");
                let left = payment.captured_amount - payment.refunded_amount;
                if amount > left {
                    return Err(too_large(amount, left, "refundable"));
                }
                amount
            }
            OperationKind::Cancel => {
                check_state(&payment, &[Status::Authorized], "canceled")?;
                payment.authorized_amount
            }
            OperationKind::Authorize => unreachable!("authorizations start with the payment"),
        };
        let op = store::start_operation(&tx, &payment, Uuid::from_u128(rand::random()), kind, amount).await?;
        idempotency::remember(&tx, held, payment.id, Some(op.id)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.drive(merchant, payment, op, Some(held)).await
    }

    /// A request that took over a key whose first request stopped: what that request made is resolved (its
    /// operation sent again under the same PSP idempotency key), never made again.
    pub async fn resume(
        &self,
        merchant: &Merchant,
        held: &Held<'_>,
        payment: Uuid,
        operation: Option<Uuid>,
    ) -> Result<Done, Refusal> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let Some(p) = store::load(&client, &merchant.merchant_id, payment).await? else { return Err(not_found()) };
        let op = match operation {
            Some(op) => store::operations(&client, payment).await?.into_iter().find(|o| o.id == op),
            None => None,
        };
        drop(client);
        match op {
            Some(op) if op.state.is_open() => self.drive(merchant, p, op, Some(held)).await,
            op => {
                // Already resolved (by the resolver, or a webhook): answer with what the payment is now.
                let (status, body) = response(op.as_ref(), &p);
                let client = self.pool.get().await.map_err(StoreError::from)?;
                idempotency::finish(&client, held, status, &body).await?;
                Ok(Done { status, body, payment: p })
            }
        }
    }

    /// Sends the operation to the PSP (again, for a resumption: the same idempotency key) and applies the answer
    /// in one transaction with the operation's new state, the payment's transition and outbox rows, and the key's
    /// stored response.
    pub async fn drive(
        &self,
        merchant: &Merchant,
        payment: Payment,
        op: Operation,
        held: Option<&Held<'_>>,
    ) -> Result<Done, Refusal> {
        let tries = {
            let client = self.pool.get().await.map_err(StoreError::from)?;
            store::count_try(&client, op.id).await?
        };
        let call = Call { operation: op.id, payment: &payment, merchant };
        let outcome = match op.kind {
            OperationKind::Authorize => {
                let client = self.pool.get().await.map_err(StoreError::from)?;
                let (sealed, key_id) = store::secrets(&client, payment.id).await?;
                drop(client);
                let secrets = self
                    .vault
                    .open(&sealed, &key_id, payment.id.as_bytes())
                    .ok()
                    .and_then(|plain| serde_json::from_str::<Secrets>(plain.expose()).ok())
                    .ok_or_else(|| {
                        tracing::error!(payment = %payment.id, "a payment's sealed secrets do not open");
                        Refusal::new(500, "api_error", "vault", "the payment's token cannot be opened")
                    })?;
                let answer =
                    self.connectors.authorize(&call, &secrets.payment_method, secrets.customer.as_deref()).await;
                Outcome::Payment(answer)
            }
            OperationKind::Capture => Outcome::Modification(self.connectors.capture(&call, op.amount).await),
            OperationKind::Refund => Outcome::Modification(self.connectors.refund(&call, op.amount).await),
            OperationKind::Cancel => Outcome::Modification(self.connectors.cancel(&call).await),
        };
        // A call kept back by the breaker is "nothing happened" only for the first request of an operation; a
        // re-send that was kept back leaves the operation as it was (the first may have charged).
        if tries > 1 && outcome.not_sent() {
            return self.answer_current(&payment, op.id, held).await;
        }
        self.apply(&payment, &op, outcome, held).await
    }

    async fn apply(
        &self,
        payment: &Payment,
        op: &Operation,
        outcome: Outcome,
        held: Option<&Held<'_>>,
    ) -> Result<Done, Refusal> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let mut tx = client.transaction().await.map_err(StoreError::from)?;
        // The answer applies to the payment as it is now (the resolver or a webhook may have moved it since).
        let current = store::lock(&tx, &payment.merchant_id, payment.id).await?.ok_or_else(not_found)?;
        let (state, reference, failure, change) = settle(&current, op, outcome);
        let settled = match store::settle_operation(
            &tx,
            op.id,
            state,
            reference.as_deref(),
            failure.as_ref().map(|(c, m)| (c.as_str(), m.as_deref())),
        )
        .await
        {
            Ok(o) => o,
            Err(StoreError::Refused(_)) => {
                // Someone resolved it first (a final operation never moves): answer with what is.
                drop(tx);
                return self.answer_current(payment, op.id, held).await;
            }
            Err(e) => return Err(e.into()),
        };
        if settled.state == OperationState::Unresolved && op.state != OperationState::Unresolved {
            Metrics::add(&self.metrics.unresolved);
        }
        let after = match change {
            Some(change) => {
                // In a savepoint: a change the state machine refuses must not abort the operation's settlement.
                let sp = tx.transaction().await.map_err(StoreError::from)?;
                match store::transition(&sp, &current, change).await {
                    Ok(p) => {
                        sp.commit().await.map_err(StoreError::from)?;
                        p
                    }
                    Err(StoreError::Refused(m)) => {
                        sp.rollback().await.map_err(StoreError::from)?;
                        tracing::warn!(payment = %payment.id, reason = %m, "a PSP answer the state machine refuses");
                        current
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => current,
        };
        let (status, body) = response(Some(&settled), &after);
        if let Some(held) = held {
            idempotency::finish(&tx, held, status, &body).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if !settled.state.is_open() && op.state.is_open() && held.is_none() {
            Metrics::add(&self.metrics.resolved);
        }
        Ok(Done { status, body, payment: after })
    }

    async fn answer_current(&self, payment: &Payment, op: Uuid, held: Option<&Held<'_>>) -> Result<Done, Refusal> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        let p = store::load(&client, &payment.merchant_id, payment.id).await?.ok_or_else(not_found)?;
        let o = store::operations(&client, payment.id).await?.into_iter().find(|o| o.id == op);
        let (status, body) = response(o.as_ref(), &p);
        if let Some(held) = held {
            idempotency::finish(&client, held, status, &body).await?;
        }
        Ok(Done { status, body, payment: p })
    }

    /// One pass of the resolver: every PSP operation left open longer than `resolver_min_age_ms` is sent again
    /// under its own idempotency key and its answer applied. Returns how many it resolved.
    pub async fn resolve_open(self: &Arc<Self>) -> Result<usize, StoreError> {
        let before = now() - time::Duration::milliseconds(i64::try_from(self.config.resolver_min_age_ms).unwrap_or(0));
        let give_up = now() - time::Duration::seconds(i64::try_from(self.config.resolver_give_up_secs).unwrap_or(0));
        let open = {
            let client = self.pool.get().await?;
            self.give_up(&client, give_up).await?;
            store::open_operations(&client, before, give_up, 100).await?
        };
        let mut resolved = 0;
        for (op, merchant_id) in open {
            let client = self.pool.get().await?;
            // Take the operation (its updated_at is the resolver's lease): another resolver skips it.
            let taken = client
                .execute(
                    "UPDATE api_payment_operations SET updated_at = now()
                      WHERE operation_id = $1 AND state IN ('started', 'unresolved') AND updated_at < $2",
                    &[&op.id, &before],
                )
                .await?;
            if taken == 0 {
                continue;
            }
            let Some(merchant) = crate::merchants::find(&client, &merchant_id).await? else { continue };
            let Some(payment) = store::load(&client, &merchant_id, op.payment_id).await? else { continue };
            drop(client);
            match self.drive(&merchant, payment, op, None).await {
                Ok(done) if done.status != 202 => resolved += 1,
                Ok(_) => {}
                Err(r) => tracing::warn!(code = r.code, message = %r.message, "resolving a PSP operation"),
            }
        }
        Ok(resolved)
    }
}

/// An operation's new state, the PSP's reference of it, its failure, and the payment's change.
type Settled = (OperationState, Option<String>, Option<(String, Option<String>)>, Option<Change>);

impl Api {
    /// Operations still open past `before` (the PSP keeps idempotency keys about a day: resending after that could
    /// make a second charge) stop being resent: their payment goes to `requires_review`, the operation stays open,
    /// so that nothing else starts on the payment until a person has looked at the PSP.
    async fn give_up(&self, client: &deadpool_postgres::Client, before: OffsetDateTime) -> Result<(), StoreError> {
        let rows = client
            .query(
                "SELECT p.merchant_id, p.payment_id FROM api_payment_operations o JOIN api_payments p USING (payment_id)
                  WHERE o.state IN ('started', 'unresolved') AND o.created_at <= $1
                    AND p.status NOT IN ('requires_review', 'failed', 'canceled')",
                &[&before],
            )
            .await?;
        for row in rows {
            let (merchant, id): (String, Uuid) = (row.get(0), row.get(1));
            let mut c = self.pool.get().await?;
            let tx = c.transaction().await?;
            let Some(p) = store::lock(&tx, &merchant, id).await? else { continue };
            let change = Change {
                status: Some(Status::RequiresReview),
                failure: Some((
                    "psp_unanswered".into(),
                    Some("the PSP did not answer within its idempotency window: check the PSP before acting".into()),
                )),
                ..Change::default()
            };
            match store::transition(&tx, &p, change).await {
                Ok(_) => tx.commit().await?,
                Err(e) => tracing::warn!(payment = %id, error = %e, "moving an unanswered payment to review"),
            }
        }
        Ok(())
    }
}

enum Outcome {
    Payment(Answer<PspPayment>),
    Modification(Answer<PspModification>),
}

impl Outcome {
    fn not_sent(&self) -> bool {
        matches!(self, Outcome::Payment(Answer::NotSent) | Outcome::Modification(Answer::NotSent))
    }
}

/// The operation's new state and the payment's change, from the PSP's answer.
fn settle(payment: &Payment, op: &Operation, outcome: Outcome) -> Settled {
    match outcome {
        Outcome::Payment(Answer::Ok(pp)) => {
            let state = match pp.status {
                PspStatus::Processing | PspStatus::NeedsReview => OperationState::Received,
                PspStatus::Failed => OperationState::Failed,
                _ => OperationState::Succeeded,
            };
            (state, Some(pp.psp_payment_id.clone()), pp.failure.clone(), Some(payment_change(&pp)))
        }
        Outcome::Payment(Answer::Refused { payment: Some(pp), code, message, .. }) => {
            let mut change = payment_change(&pp);
            if change.status != Some(Status::Failed) {
                change.status = Some(Status::Failed);
            }
            change.failure = Some((code.clone(), Some(message.clone())));
            (OperationState::Failed, Some(pp.psp_payment_id), Some((code, Some(message))), Some(change))
        }
        Outcome::Payment(Answer::Refused { code, message, .. }) => {
            let failure = Some((code, Some(message)));
            let change = Change { status: Some(Status::Failed), failure: failure.clone(), ..Change::default() };
            (OperationState::Failed, None, failure, Some(change))
        }
        Outcome::Payment(Answer::NotSent) => {
            let failure =
                Some(("psp_unavailable".to_owned(), Some("the PSP could not be reached: not sent".to_owned())));
            let change = Change { status: Some(Status::Failed), failure: failure.clone(), ..Change::default() };
            (OperationState::Failed, None, failure, Some(change))
        }
        Outcome::Payment(Answer::NoAnswer { reason }) => {
            let change = (payment.status == Status::Created)
                .then(|| Change { status: Some(Status::Pending), ..Change::default() });
            (OperationState::Unresolved, None, Some(("no_answer".into(), Some(reason))), change)
        }
        Outcome::Modification(Answer::Ok(m)) => {
            let mut change = m.payment.as_ref().map(payment_change).unwrap_or_default();
            change.facts.extend(m.facts.iter().cloned());
            let done = matches!(m.state, OperationState::Succeeded | OperationState::Received);
            if done {
                match op.kind {
                    OperationKind::Capture => {
                        change.status = Some(Status::Captured);
                        // Stripe states the total captured; Adyen's `received` only that it will capture.
                        let total = m.payment.as_ref().map_or(payment.captured_amount + op.amount, |p| p.captured);
                        change.captured_amount = Some(total.max(payment.captured_amount));
                    }
                    OperationKind::Refund => {
                        change.status = Some(Status::Refunded);
                        change.refunded_amount = Some(payment.refunded_amount + op.amount);
                    }
                    OperationKind::Cancel => change.status = Some(Status::Canceled),
                    OperationKind::Authorize => {}
                }
            } else {
                change.status = None;
            }
            if change.status == Some(payment.status) {
                change.status = None;
            }
            (m.state, m.psp_reference.clone(), m.failure.clone(), Some(change))
        }
        Outcome::Modification(Answer::Refused { code, message, .. }) => {
            (OperationState::Failed, None, Some((code, Some(message))), None)
        }
        Outcome::Modification(Answer::NotSent) => (
            OperationState::Failed,
            None,
            Some(("psp_unavailable".into(), Some("the PSP could not be reached: not sent".into()))),
            None,
        ),
        Outcome::Modification(Answer::NoAnswer { reason }) => {
            (OperationState::Unresolved, None, Some(("no_answer".into(), Some(reason))), None)
        }
    }
}

/// The payment change an authorization's (or a Stripe intent's) answer states.
fn payment_change(pp: &PspPayment) -> Change {
    let status = match pp.status {
        PspStatus::Authorized => Status::Authorized,
        PspStatus::Captured => Status::Captured,
        PspStatus::Failed => Status::Failed,
        PspStatus::Canceled => Status::Canceled,
        PspStatus::Processing => Status::Pending,
        PspStatus::NeedsReview => Status::RequiresReview,
    };
    Change {
        status: Some(status),
        authorized_amount: (pp.authorized > 0).then_some(pp.authorized),
        captured_amount: (pp.captured > 0).then_some(pp.captured),
        refunded_amount: None,
        psp_payment_id: (!pp.psp_payment_id.is_empty()).then(|| pp.psp_payment_id.clone()),
        psp_charge_id: pp.psp_charge_id.clone(),
        failure: pp.failure.clone(),
        facts: pp.facts.clone(),
    }
}

/// The status and body of a request's response: 201 with the payment for a payment created (a decline included:
/// the payment is `failed`), 200 for a modification done, 202 while the PSP's answer is outstanding or only
/// `received`, 402 with an error that carries the payment when the PSP refused a modification.
fn response(op: Option<&Operation>, p: &Payment) -> (u16, Vec<u8>) {
    let state = op.map(|o| o.state);
    if matches!(state, Some(OperationState::Unresolved | OperationState::Started | OperationState::Received))
        || p.status == Status::Pending
    {
        return (202, resource_bytes(p));
    }
    match op {
        Some(o) if o.kind != OperationKind::Authorize && o.state == OperationState::Failed => {
            let body = serde_json::json!({"error": {
                "type": "psp_error",
                "code": "psp_refused",
                "message": o.failure_message.clone().unwrap_or_else(|| format!("the PSP refused the {}", o.kind)),
                "param": null,
                "psp_code": o.failure_code,
                "payment": p.resource(),
            }});
            (402, serde_json::to_vec(&body).expect("an error serializes"))
        }
        Some(o) if o.kind == OperationKind::Authorize => (201, resource_bytes(p)),
        _ => (200, resource_bytes(p)),
    }
}

pub fn resource_bytes(p: &Payment) -> Vec<u8> {
    serde_json::to_vec(&p.resource()).expect("a payment resource serializes")
}

fn check_state(p: &Payment, allowed: &[Status], verb: &str) -> Result<(), Refusal> {
    if allowed.contains(&p.status) {
        return Ok(());
    }
    Err(Refusal::new(409, "invalid_request_error", "payment_state", format!("a {} payment cannot be {verb}", p.status)))
}

fn too_large(amount: i64, left: i64, what: &str) -> Refusal {
    Refusal::new(409, "invalid_request_error", "amount_too_large", format!("{amount} exceeds the {left} {what}"))
        .param("amount")
}

pub fn not_found() -> Refusal {
    Refusal::new(404, "invalid_request_error", "payment_not_found", "no such payment")
}
