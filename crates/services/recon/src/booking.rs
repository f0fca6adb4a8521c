//! Booking settlement reports (ADR 0015 §4): each line's facts ([`SettlementLine::facts`]) produced on
//! `payments.settlement-report.v1`, where the ledger books it exactly once by its fact key (a line stated twice, or
//! a file imported again, is the same fact). A line the books cannot take is reported with its line and stays
//! stored and matched; an unmapped category is counted, not booked.

use futures::future::join_all;
use tally_domain::{PaymentEvent, Timestamp};
use tally_kafka::{Header, KafkaConfig, Producer};
use tally_psp::report::{NotBooked, Report, SettlementLine};

/// What booking a report did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Booking {
    /// Facts produced (durable on the broker): one per distinct line identity, three for a line settled across
    /// currencies (its own and the two conversion legs).
    pub facts: usize,
    /// Lines whose identity an earlier line of the file has: the same fact, produced once.
    pub repeated: usize,
    /// Lines of a category Tally does not map.
    pub unmapped: usize,
    /// Lines the books cannot take, each with its line number and reason.
    pub not_booked: Vec<NotBooked>,
}

/// The facts of a report's lines, each identity once, and what was not booked.
pub fn facts(report: &Report, received_at: Timestamp) -> (Vec<PaymentEvent>, Booking) {
    let mut booking = Booking::default();
    // Each identity's first line, and what it says.
    let mut seen: std::collections::HashMap<tally_domain::FactKey, (u64, tally_domain::ContentDigest)> =
        std::collections::HashMap::new();
    let mut facts = Vec::new();
    for line in &report.lines {
        match SettlementLine::facts(line, &report.sha256, received_at) {
            Ok(line_facts) if line_facts.is_empty() => booking.unmapped += 1,
            Err(e) => booking.not_booked.push(e),
            // The line's own fact first, then its conversion legs (a line settled across currencies).
            Ok(line_facts) => match seen.get(&line_facts[0].fact_key()) {
                Some((_, content)) if *content == line_facts[0].content_digest() => booking.repeated += 1,
                // The same line stated twice with other money: the first stands, the second is reported.
                Some((first, _)) => booking.not_booked.push(NotBooked {
                    line: line.line,
                    reason: format!("the same line identity as line {first} with other money: line {first} is booked"),
                }),
                None => {
                    seen.insert(line_facts[0].fact_key(), (line.line, line_facts[0].content_digest()));
                    facts.extend(line_facts);
                }
            },
        }
    }
    (facts, booking)
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("encoding a settlement fact: {0}")]
    Encode(#[from] tally_contracts::ContractError),
    #[error("producing settlement facts (nothing is lost: import the file again): {0}")]
    Produce(#[from] tally_kafka::KafkaError),
}

/// Produces the report's facts and waits until every one is durable. Called *before* the file is recorded as
/// imported, so that a crash in between only produces the facts again on the next import (the ledger counts them
/// as duplicates), never loses them.
pub async fn produce(
    producer: &Producer,
    kafka: &KafkaConfig,
    report: &Report,
    received_at: Timestamp,
) -> Result<Booking, BookError> {
    let (facts, mut booking) = facts(report, received_at);
    let encoded = facts
        .iter()
        .map(|f| Ok((f, tally_contracts::encode_payment_event(f, None)?, f.fact_key().to_string())))
        .collect::<Result<Vec<_>, BookError>>()?;
    let sends = encoded.iter().map(|(fact, value, key)| {
        let topic = kafka.topic(tally_kafka::topic_for(fact.kind));
        async move {
            let headers = [Header { key: "fact_key", value: key.as_bytes() }];
            producer.send(&topic, fact.payment_id.as_bytes(), value, &headers).await
        }
    });
    for result in join_all(sends).await {
        result?;
    }
    booking.facts = facts.len();
    Ok(booking)
}
