//! What the API keeps about a payment, as the database holds it (`migrations/0019_payments_api.sql`) and as a
//! merchant sees it (the `Payment` resource of `openapi.json`).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tally_domain::Psp;
use time::OffsetDateTime;
use uuid::Uuid;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A payment's status (the SQL enum `api_payment_status`; the legal moves are the table `api_payment_transitions`).
    Status {
        Created = "created",
        Pending = "pending",
        Authorized = "authorized",
        Captured = "captured",
        Refunded = "refunded",
        Failed = "failed",
        Canceled = "canceled",
        RequiresReview = "requires_review",
    }
);

text_enum!(
    CaptureMethod { Automatic = "automatic", Manual = "manual" }
);

text_enum!(
    /// What a PSP call does.
    OperationKind { Authorize = "authorize", Capture = "capture", Refund = "refund", Cancel = "cancel" }
);

text_enum!(
    /// Where a PSP call is: `started` (the request is out), `unresolved` (no answer: it may have happened),
    /// `received` (accepted, confirmed later by webhook), `succeeded`, `failed`.
    OperationState {
        Started = "started",
        Unresolved = "unresolved",
        Received = "received",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

impl Status {
    /// No change can follow.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Failed | Status::Canceled)
    }
}

impl OperationState {
    /// The PSP may or may not have acted: nothing else may start on the payment until it is resolved.
    pub fn is_open(self) -> bool {
        matches!(self, OperationState::Started | OperationState::Unresolved)
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub merchant_id: String,
    pub merchant_reference: String,
    pub amount: i64,
    pub currency: String,
    pub capture_method: CaptureMethod,
    pub psp: Psp,
    pub status: Status,
    pub version: i32,
    pub authorized_amount: i64,
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub psp_payment_id: Option<String>,
    pub psp_charge_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A PSP call of a payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub kind: OperationKind,
    pub psp: Psp,
    pub amount: i64,
    pub state: OperationState,
    pub psp_reference: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub tries: i32,
}

/// A new payment id whose public form holds nothing the PAN scan would take for a card number (about one random id
/// in a thousand does: 13 or more hex digits in a row that are decimal, a card network's prefix, Luhn): its path
/// `/v1/payments/pay_…` would otherwise be refused for ever.
pub fn new_payment_id() -> Uuid {
    loop {
        let id = Uuid::from_u128(rand::random());
        if !tally_domain::pan::contains_pan(public_id(id).as_bytes()) {
            return id;
        }
    }
}

/// The public id of a payment: `pay_` and the UUID's 32 hex digits.
pub fn public_id(id: Uuid) -> String {
    format!("pay_{}", id.simple())
}

/// The UUID of a public payment id, or `None` when it is not one.
pub fn parse_public_id(text: &str) -> Option<Uuid> {
    let hex = text.strip_prefix("pay_")?;
    (hex.len() == 32).then(|| Uuid::try_parse(hex).ok()).flatten()
}

/// The `Payment` resource (`openapi.json`): what GET returns, what POSTs answer, what `payments.api.v1` carries.
#[derive(Debug, Serialize)]
pub struct Resource<'a> {
    pub id: String,
    pub object: &'static str,
    pub merchant_reference: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub capture_method: CaptureMethod,
    pub psp: Psp,
    pub status: Status,
    pub amount_authorized: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub psp_reference: Option<&'a str>,
    pub failure: Option<Failure<'a>>,
    pub version: i32,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize)]
pub struct Failure<'a> {
    pub code: &'a str,
    pub message: Option<&'a str>,
}

impl Payment {
    pub fn resource(&self) -> Resource<'_> {
        Resource {
            id: public_id(self.id),
            object: "payment",
            merchant_reference: &self.merchant_reference,
            amount: self.amount,
            currency: &self.currency,
            capture_method: self.capture_method,
            psp: self.psp,
            status: self.status,
            amount_authorized: self.authorized_amount,
            amount_captured: self.captured_amount,
            amount_refunded: self.refunded_amount,
            psp_reference: self.psp_payment_id.as_deref(),
            failure: self
                .failure_code
                .as_deref()
                .map(|code| Failure { code, message: self.failure_message.as_deref() }),
            version: self.version,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_new_payment_id_looks_like_a_card_number() {
        // The control: plain random ids do trip the scan (about 20 in 20,000), so the draw-again matters.
        let tripped = (0..20_000)
            .filter(|_| {
                tally_domain::pan::contains_pan(super::public_id(uuid::Uuid::from_u128(rand::random())).as_bytes())
            })
            .count();
        assert!(tripped > 0, "no random id tripped the scan: the control shows nothing");
        for _ in 0..20_000 {
            let id = super::public_id(super::new_payment_id());
            assert!(!tally_domain::pan::contains_pan(id.as_bytes()), "{id}");
        }
    }

    use super::*;

    #[test]
    fn a_public_id_round_trips_and_nothing_else_parses() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(parse_public_id(&public_id(id)), Some(id));
        for bad in
            ["", "pay_", "pay_0123", "ch_0123456789abcdef0123456789abcdef", "pay_0123456789abcdef0123456789abcdeg"]
        {
            assert_eq!(parse_public_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_status_names_itself_back() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
        }
        assert!("paid".parse::<Status>().is_err());
    }
}
