//! PSP connectors: one module per PSP, each the same parts in the same order — the wire types (from the PSP's
//! published OpenAPI spec), the requests, and the mapping of the PSP's answer to Tally's domain — over one
//! transport ([`transport`]) that retries, backs off and trips a circuit breaker the same way for every PSP.
//!
//! Every call carries an `Idempotency-Key` derived from Tally's operation id ([`psp_idempotency_key`]): a retry,
//! a resumption after a crash and the resolver's replay of an ambiguous call are all the same request to the PSP,
//! which answers it once.

pub mod adyen;
pub mod breaker;
pub mod stripe;
pub mod transport;

use tally_domain::{EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{rescale, Currency, ExponentScheme, Money};
use uuid::Uuid;

use crate::merchants::Merchant;
use crate::model::Payment;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use transport::{RetryConfig, Transport};

/// The PSP's idempotency key of an operation: the same on every request for it (Adyen allows 64 characters).
pub fn psp_idempotency_key(operation: Uuid) -> String {
    format!("tally-{operation}")
}

/// What the PSP says a payment is, after a call about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PspStatus {
    Authorized,
    Captured,
    Failed,
    Canceled,
    /// Accepted and still processing: the outcome comes later (a resolver poll, a webhook).
    Processing,
    /// The PSP wants something Tally cannot give server to server (a redirect, 3-D Secure, a partial
    /// authorization): a person decides.
    NeedsReview,
}

/// The payment as the PSP's answer states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspPayment {
    pub status: PspStatus,
    /// The PSP's id of the payment (Stripe: the PaymentIntent; Adyen: the pspReference).
    pub psp_payment_id: String,
    /// The id the ledger names the payment by (Stripe: the latest charge; Adyen: the pspReference).
    pub psp_charge_id: Option<String>,
    pub authorized: i64,
    pub captured: i64,
    pub failure: Option<(String, Option<String>)>,
    /// The facts the answer states, with the fact keys the PSP's webhooks give them.
    pub facts: Vec<PaymentEvent>,
}

/// What a modification (capture, refund, cancel) became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspModification {
    /// `Succeeded`, `Received` (confirmed later by webhook) or `Failed`.
    pub state: crate::model::OperationState,
    pub psp_reference: Option<String>,
    pub amount: i64,
    /// The payment after it, when the PSP's answer states it (Stripe does; Adyen answers `received`).
    pub payment: Option<PspPayment>,
    pub facts: Vec<PaymentEvent>,
    pub failure: Option<(String, Option<String>)>,
}

/// The outcome of one call, after the transport's retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Ok(T),
    /// A definite refusal (a 4xx): nothing happened at the PSP, or the PSP says it failed.
    Refused {
        status: u16,
        code: String,
        message: String,
        payment: Option<PspPayment>,
    },
    /// Not sent: the PSP's breaker is open, or no connection could be made. Nothing happened at the PSP.
    NotSent,
    /// No answer (network error, timeout, 5xx after every retry, or the breaker open mid-call): the PSP may have
    /// acted. The operation stays unresolved until the same request, replayed, tells.
    NoAnswer {
        reason: String,
    },
}

/// The configured connectors.
pub struct Connectors {
    pub stripe: Option<stripe::Stripe>,
    pub adyen: Option<adyen::Adyen>,
}

/// What the connector needs to know about the payment and merchant of a call.
pub struct Call<'a> {
    pub operation: Uuid,
    pub payment: &'a Payment,
    pub merchant: &'a Merchant,
}

impl Connectors {
    pub fn configured(&self, psp: Psp) -> bool {
        match psp {
            Psp::Stripe => self.stripe.is_some(),
            Psp::Adyen => self.adyen.is_some(),
        }
    }

    pub fn breaker(&self, psp: Psp) -> Option<&Breaker> {
        match psp {
            Psp::Stripe => self.stripe.as_ref().map(|c| &c.transport.breaker),
            Psp::Adyen => self.adyen.as_ref().map(|c| &c.transport.breaker),
        }
    }

    fn missing(psp: Psp) -> String {
        format!("the {psp} connector is not configured")
    }

    /// Sends (or, for a resumption, sends again under the same idempotency key) the authorization.
    pub async fn authorize(&self, call: &Call<'_>, token: &str, customer: Option<&str>) -> Answer<PspPayment> {
        match call.payment.psp {
            Psp::Stripe => match &self.stripe {
                Some(c) => c.authorize(call, token, customer).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Stripe) },
            },
            Psp::Adyen => match &self.adyen {
                Some(c) => c.authorize(call, token, customer).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Adyen) },
            },
        }
    }

    pub async fn capture(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        match call.payment.psp {
            Psp::Stripe => match &self.stripe {
                Some(c) => c.capture(call, amount).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Stripe) },
            },
            Psp::Adyen => match &self.adyen {
                Some(c) => c.capture(call, amount).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Adyen) },
            },
        }
    }

    pub async fn refund(&self, call: &Call<'_>, amount: i64) -> Answer<PspModification> {
        match call.payment.psp {
            Psp::Stripe => match &self.stripe {
                Some(c) => c.refund(call, amount).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Stripe) },
            },
            Psp::Adyen => match &self.adyen {
                Some(c) => c.refund(call, amount).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Adyen) },
            },
        }
    }

    pub async fn cancel(&self, call: &Call<'_>) -> Answer<PspModification> {
        match call.payment.psp {
            Psp::Stripe => match &self.stripe {
                Some(c) => c.cancel(call).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Stripe) },
            },
            Psp::Adyen => match &self.adyen {
                Some(c) => c.cancel(call).await,
                None => Answer::NoAnswer { reason: Self::missing(Psp::Adyen) },
            },
        }
    }
}

/// What a fact the API learned names, beside its kind and money: the ledger's payment (`<psp>:<id>`), the PSP's
/// reference of the fact and, for a modification, of the payment it modifies.
pub(crate) struct FactNames<'a> {
    pub payment: &'a str,
    pub reference: &'a str,
    pub original: Option<&'a str>,
}

/// A fact as the PSP's webhook mapping would state it (`tally_psp`): the ledger's payment id, the merchant the
/// webhook names, ISO minor units; `None` when the merchant has no name at that PSP or the money is unreadable.
pub(crate) fn api_fact(
    call: &Call<'_>,
    psp: Psp,
    kind: EventKind,
    names: FactNames<'_>,
    money: (i64, &str),
) -> Option<PaymentEvent> {
    let (wire, currency) = money;
    let currency = Currency::from_code(&currency.to_ascii_uppercase()).ok()?;
    let minor = rescale(wire, currency.exponent_in(scheme(psp)), currency.exponent()).ok()?;
    let now = now();
    Some(PaymentEvent {
        kind,
        payment_id: format!("{psp}:{}", names.payment),
        psp,
        psp_reference: names.reference.to_owned(),
        original_reference: names.original.map(str::to_owned),
        merchant_id: call.merchant.psp_merchant_id(psp)?,
        money: Money::new(minor, currency),
        fee: None,
        occurred_at: now,
        received_at: now,
        source: Source::Api,
        source_event_id: format!("api:{}:{kind}", call.operation),
        attributes: Default::default(),
    })
}

fn scheme(psp: Psp) -> ExponentScheme {
    match psp {
        Psp::Stripe => ExponentScheme::Stripe,
        Psp::Adyen => ExponentScheme::Adyen,
    }
}

/// ISO minor units → the PSP's wire units (they differ for a few currencies: Stripe ISK, Adyen CLP …).
pub(crate) fn wire_amount(psp: Psp, minor: i64, currency: &str) -> Result<i64, String> {
    let c = Currency::from_code(currency).map_err(|e| e.to_string())?;
    rescale(minor, c.exponent(), c.exponent_in(scheme(psp))).map(|a| a.minor()).map_err(|e| e.to_string())
}

/// The PSP's wire units → ISO minor units.
pub(crate) fn iso_amount(psp: Psp, wire: i64, currency: &str) -> Result<i64, String> {
    let c = Currency::from_code(&currency.to_ascii_uppercase()).map_err(|e| e.to_string())?;
    rescale(wire, c.exponent_in(scheme(psp)), c.exponent()).map(|a| a.minor()).map_err(|e| e.to_string())
}

pub(crate) fn now() -> Timestamp {
    let micros = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    Timestamp::from_unix_micros(i64::try_from(micros).unwrap_or(i64::MAX)).expect("now is a valid timestamp")
}
