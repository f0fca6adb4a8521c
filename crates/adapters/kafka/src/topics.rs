//! The topic catalogue (DESIGN §2). Topics are created explicitly by `tally topics ensure`; Tally never relies on
//! auto-creation (the local broker does not support it, and production clusters should not allow it).

use tally_domain::EventKind;

/// A topic Tally owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// What is on it.
    pub purpose: &'static str,
}

pub const RAW_TOPIC: &str = "webhooks.raw.v1";

/// Every topic, with its partition count. Key = payment id on all payment topics, so that one payment's facts stay
/// in order on one partition.
pub const TOPICS: &[TopicSpec] = &[
    TopicSpec { name: RAW_TOPIC, partitions: 6, purpose: "PSP bytes as received, with verdict" },
    TopicSpec {
        name: "payments.authorization.v1",
        partitions: 6,
        purpose: "authorized, authorization_failed, canceled",
    },
    TopicSpec {
        name: "payments.capture.v1",
        partitions: 6,
        purpose: "captured, capture_reversed, capture_failed (v1), settled",
    },
    TopicSpec { name: "payments.refund.v1", partitions: 6, purpose: "refunded, refund_failed" },
    TopicSpec { name: "payments.chargeback.v1", partitions: 6, purpose: "every dispute stage" },
    TopicSpec {
        name: "payments.settlement-report.v1",
        partitions: 3,
        purpose: "settlement report rows, payouts, fees",
    },
    TopicSpec { name: "payments.dlq.v1", partitions: 3, purpose: "undecodable or contract-violating records" },
];

/// The payments API's own topics (issue 17), ensured by `tally relay`: the state change of every payment version (the
/// `Payment` resource as JSON, key = the public payment id). Not yet archived nor reconciled: its records are not
/// lifecycle facts (the facts the API learns go to the lifecycle topics, as ingest's do).
pub const API_TOPICS: &[TopicSpec] =
    &[TopicSpec { name: "payments.api.v1", partitions: 6, purpose: "the payments API's state changes, per version" }];

/// The lifecycle topics (without prefix): every fact is on one of them; the ledger and the warehouse read them all.
pub const LIFECYCLE_TOPICS: &[&str] = &[
    "payments.authorization.v1",
    "payments.capture.v1",
    "payments.refund.v1",
    "payments.chargeback.v1",
    "payments.settlement-report.v1",
];

/// The lifecycle topic a fact of this kind goes to (without prefix).
pub fn topic_for(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Authorized | EventKind::AuthorizationFailed | EventKind::Canceled => "payments.authorization.v1",
        EventKind::Captured | EventKind::CaptureFailed | EventKind::CaptureReversed | EventKind::Settled => {
            "payments.capture.v1"
        }
        EventKind::Refunded | EventKind::RefundFailed => "payments.refund.v1",
        EventKind::ChargebackOpened
        | EventKind::ChargebackWon
        | EventKind::ChargebackLost
        | EventKind::SecondChargeback
        | EventKind::PrearbitrationWon
        | EventKind::PrearbitrationLost => "payments.chargeback.v1",
        EventKind::Payout
        | EventKind::Fee
        | EventKind::SettledCredit
        | EventKind::SettledDebit
        | EventKind::SettledPayout
        | EventKind::ConversionOut
        | EventKind::ConversionIn => "payments.settlement-report.v1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_catalogue_topic() {
        for kind in EventKind::ALL {
            assert!(TOPICS.iter().any(|t| t.name == topic_for(kind)), "{kind}");
            assert!(LIFECYCLE_TOPICS.contains(&topic_for(kind)), "{kind}");
        }
        // Only topics facts go to: not the raw deliveries, not the DLQ.
        for t in LIFECYCLE_TOPICS {
            assert!(EventKind::ALL.iter().any(|k| topic_for(*k) == *t), "{t}");
        }
    }
}
