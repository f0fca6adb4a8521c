use std::sync::LazyLock;

use apache_avro::Schema;

use crate::ContractError;

/// One registered schema version. `schemas/registry.json` lists the same entries (checked by a test).
#[derive(Debug)]
pub struct SchemaEntry {
    pub subject: &'static str,
    pub version: u32,
    pub id: u32,
    pub file: &'static str,
    pub source: &'static str,
}

pub const SCHEMAS: &[SchemaEntry] = &[
    SchemaEntry {
        subject: "io.tally.payments.PaymentEvent",
        version: 1,
        id: 1,
        file: "payments/PaymentEvent.v1.avsc",
        source: include_str!("../../../../schemas/payments/PaymentEvent.v1.avsc"),
    },
    SchemaEntry {
        subject: "io.tally.webhooks.RawDelivery",
        version: 1,
        id: 2,
        file: "webhooks/RawDelivery.v1.avsc",
        source: include_str!("../../../../schemas/webhooks/RawDelivery.v1.avsc"),
    },
    SchemaEntry {
        subject: "io.tally.payments.PaymentEvent",
        version: 2,
        id: 3,
        file: "payments/PaymentEvent.v2.avsc",
        source: include_str!("../../../../schemas/payments/PaymentEvent.v2.avsc"),
    },
    SchemaEntry {
        subject: "io.tally.payments.PaymentEvent",
        version: 3,
        id: 4,
        file: "payments/PaymentEvent.v3.avsc",
        source: include_str!("../../../../schemas/payments/PaymentEvent.v3.avsc"),
    },
    SchemaEntry {
        subject: "io.tally.payments.PaymentEvent",
        version: 4,
        id: 5,
        file: "payments/PaymentEvent.v4.avsc",
        source: include_str!("../../../../schemas/payments/PaymentEvent.v4.avsc"),
    },
];

/// The PaymentEvent version Tally writes.
pub(crate) const PAYMENT_EVENT_ID: u32 = 5;
/// Every PaymentEvent version Tally reads (the archive and the broker's log keep records of older versions).
pub(crate) const PAYMENT_EVENT_IDS: &[u32] = &[1, 3, 4, 5];
pub(crate) const RAW_DELIVERY_ID: u32 = 2;

static PARSED: LazyLock<Vec<(u32, Schema)>> = LazyLock::new(|| {
    SCHEMAS
        .iter()
        .map(|e| (e.id, Schema::parse_str(e.source).unwrap_or_else(|err| panic!("{}: {err}", e.file))))
        .collect()
});

/// The parsed schema with this id.
pub fn schema(id: u32) -> Result<&'static Schema, ContractError> {
    PARSED.iter().find(|(i, _)| *i == id).map(|(_, s)| s).ok_or(ContractError::UnknownSchema(id))
}
