//! A circuit breaker per PSP: `closed` (calls go through) → after `failures_to_open` consecutive failures (network
//! errors, timeouts, 5xx) `open` (new payments are not sent; they fail over when the merchant allows it) → after
//! `open_for`, `half_open`: up to `half_open_probes` calls go through; one success closes it, one failure opens it
//! again. A 4xx is an answer, not a failure of the PSP: it never counts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub failures_to_open: u32,
    /// How long it stays open before letting probes through.
    pub open_for_ms: u64,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures_to_open: 5, open_for_ms: 30_000, half_open_probes: 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value of `tally_api_breaker_state` (0 closed, 1 half-open, 2 open).
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probes: u32,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            inner: Mutex::new(Inner { state: BreakerState::Closed, failures: 0, opened_at: None, probes: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// Whether a call may go out now (in half-open, it takes one of the probe slots).
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    pub fn success(&self) {
        let mut i = self.inner.lock().expect("breaker lock");
        *i = Inner { state: BreakerState::Closed, failures: 0, opened_at: None, probes: 0 };
    }

    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        let mut i = self.inner.lock().expect("breaker lock");
        Self::tick(&self.config, &mut i, now);
        i.state
    }

    fn tick(config: &BreakerConfig, i: &mut Inner, now: Instant) {
        if i.state == BreakerState::Open
            && i.opened_at.is_some_and(|t| now.duration_since(t) >= Duration::from_millis(config.open_for_ms))
        {
            i.state = BreakerState::HalfOpen;
            i.probes = 0;
        }
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut i = self.inner.lock().expect("breaker lock");
        Self::tick(&self.config, &mut i, now);
        match i.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if i.probes < self.config.half_open_probes => {
                i.probes += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    fn failure_at(&self, now: Instant) {
        let mut i = self.inner.lock().expect("breaker lock");
        Self::tick(&self.config, &mut i, now);
        i.failures = i.failures.saturating_add(1);
        if i.state == BreakerState::HalfOpen || i.failures >= self.config.failures_to_open {
            i.state = BreakerState::Open;
            i.opened_at = Some(now);
            i.probes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failures_to_open: 3, open_for_ms: 10_000, half_open_probes: 1 })
    }

    #[test]
    fn it_opens_after_consecutive_failures_only_and_a_success_resets_the_count() {
        let (b, t) = (breaker(), Instant::now());
        b.failure_at(t);
        b.failure_at(t);
        b.success();
        b.failure_at(t);
        b.failure_at(t);
        assert_eq!(b.state_at(t), BreakerState::Closed, "2 consecutive failures after a success");
        b.failure_at(t);
        assert_eq!(b.state_at(t), BreakerState::Open);
        assert!(!b.allow_at(t + Duration::from_secs(9)));
    }

    #[test]
    fn half_open_lets_one_probe_through_which_closes_or_reopens_it() {
        let (b, t) = (breaker(), Instant::now());
        (0..3).for_each(|_| b.failure_at(t));
        let later = t + Duration::from_secs(10);
        assert_eq!(b.state_at(later), BreakerState::HalfOpen);
        assert!(b.allow_at(later), "the probe");
        assert!(!b.allow_at(later), "only one probe");
        b.failure_at(later);
        assert_eq!(b.state_at(later), BreakerState::Open, "a failed probe opens it again");
        assert!(!b.allow_at(later + Duration::from_secs(9)));
        let again = later + Duration::from_secs(10);
        assert!(b.allow_at(again));
        b.success();
        assert_eq!(b.state_at(again), BreakerState::Closed);
        assert!(b.allow_at(again) && b.allow_at(again));
    }
}
