//! The topic catalogue (DESIGN §2). Topics are created explicitly by `tally topics ensure`; Tally never relies on
//! auto-creation (the local broker does not support it, and production clusters should not allow it).

/// A topic Tally owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// What is on it.
    pub purpose: &'static str,
}

/// Every topic, with its partition count. Key = payment id on all payment topics, so that one payment's facts stay
/// in order on one partition.
pub const TOPICS: &[TopicSpec] = &[
    TopicSpec { name: "webhooks.raw.v1", partitions: 6, purpose: "PSP bytes as received, with verdict" },
    TopicSpec { name: "payments.authorization.v1", partitions: 6, purpose: "authorized, authorization_failed" },
    TopicSpec { name: "payments.capture.v1", partitions: 6, purpose: "captured, capture_failed, settled" },
    TopicSpec { name: "payments.refund.v1", partitions: 6, purpose: "refunded, refund_failed" },
    TopicSpec { name: "payments.chargeback.v1", partitions: 6, purpose: "chargeback_opened/won/lost" },
    TopicSpec {
        name: "payments.settlement-report.v1",
        partitions: 3,
        purpose: "settlement report rows, payouts, fees",
    },
    TopicSpec { name: "payments.dlq.v1", partitions: 3, purpose: "undecodable or contract-violating records" },
];
