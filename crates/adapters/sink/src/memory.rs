//! The memory source: records given up front, every partition claimed at start through the sink's own `claim` and
//! read from its stored offset. It measures a sink's own commit path without a broker (`tally bench ledger --source
//! memory`); the claims, fences and commits are the real ones.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tally_kafka::position::{Claims, PositionedClaim};

use crate::{FrameworkError, LogRecord, Source};

pub struct MemorySource<C> {
    claims: Claims<C>,
    queue: VecDeque<LogRecord>,
}

impl<C: PositionedClaim> MemorySource<C> {
    /// Claims every partition `records` hold (`claim` as the sink does on assignment) and queues each partition's
    /// records from its stored offset on, partitions interleaved in record order.
    pub fn new<E: std::fmt::Display>(
        records: Vec<LogRecord>,
        claim: impl Fn(&str, i32) -> Result<C, E>,
    ) -> Result<Self, String> {
        let mut claims = BTreeMap::new();
        for r in &records {
            if let std::collections::btree_map::Entry::Vacant(slot) = claims.entry((r.topic.clone(), r.partition)) {
                let mut c =
                    claim(&r.topic, r.partition).map_err(|e| format!("claiming {}[{}]: {e}", r.topic, r.partition))?;
                // Nothing to verify against: the records are the log.
                *c.anchor_mut() = None;
                slot.insert(c);
            }
        }
        let queue = records
            .into_iter()
            .filter(|r| claims.get(&(r.topic.clone(), r.partition)).is_some_and(|c| r.offset >= c.next_offset()))
            .collect();
        Ok(MemorySource { claims: std::sync::Mutex::new(claims.into_iter().collect()), queue })
    }

    /// Records not yet handed out.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl<C: PositionedClaim> Source<C> for MemorySource<C> {
    fn claims(&self) -> &Claims<C> {
        &self.claims
    }

    fn poll(&mut self, timeout: Duration) -> Result<Option<LogRecord>, FrameworkError> {
        match self.queue.pop_front() {
            Some(r) => Ok(Some(r)),
            None => {
                std::thread::sleep(timeout.min(Duration::from_millis(5)));
                Ok(None)
            }
        }
    }

    fn check(&mut self) -> Result<(), FrameworkError> {
        Ok(())
    }

    fn take_revoked(&mut self) -> bool {
        false
    }

    fn committed(&mut self, _ends: &[(String, i32, i64)]) {}

    fn close(&mut self) {}
}
