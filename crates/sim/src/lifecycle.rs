//! Payment lifecycles with realistic ratios, faults at known rates, and the ground truth.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tally_domain::ledger::balances;
use tally_domain::status::derive_status;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Amount, Currency, Money};

use crate::dimension::{letters, merchants, Merchant};
use crate::render;

/// The Stripe endpoint secret and Adyen HMAC key the simulated PSPs sign with (demo and tests only).
pub const STRIPE_SECRET: &str = "whsec_tally_sim";
pub const ADYEN_KEY: &str = "5E1F0C0FFEE0DA7A5E1F0C0FFEE0DA7A5E1F0C0FFEE0DA7A5E1F0C0FFEE0DA7A";

/// What to generate. Rates are probabilities per payment (lifecycle) or per delivery (faults).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub payments: usize,
    pub merchants: usize,
    pub decline_rate: f64,
    pub manual_capture_rate: f64,
    pub refund_rate: f64,
    pub chargeback_rate: f64,
    pub duplicate_rate: f64,
    pub late_rate: f64,
    pub forged_rate: f64,
    pub malformed_rate: f64,
    pub pan_rate: f64,
    pub unknown_type_rate: f64,
}

impl SimConfig {
    pub fn new(seed: u64, payments: usize) -> Self {
        SimConfig {
            seed,
            payments,
            merchants: 80_000,
            decline_rate: 0.08,
            manual_capture_rate: 0.2,
            refund_rate: 0.08,
            chargeback_rate: 0.01,
            duplicate_rate: 0.05,
            late_rate: 0.02,
            forged_rate: 0.005,
            malformed_rate: 0.002,
            pan_rate: 0.001,
            unknown_type_rate: 0.002,
        }
    }
}

/// How a delivery is to be signed when sent. Stripe signatures cover the send time, so they are made by
/// `tally sim send`; Adyen's cover the fields only and are in the body already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signing {
    Valid,
    Forged,
}

/// What Tally must answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub status: u16,
    pub code: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub seq: usize,
    pub psp: Psp,
    /// `fact`, `duplicate`, `forged`, `malformed`, `pan`, `unknown_type`.
    pub fault: &'static str,
    pub signing: Signing,
    pub expect: Expect,
    pub body: String,
}

/// The ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub payments: usize,
    pub deliveries: usize,
    /// Every fact that must be booked, exactly once, sorted.
    pub fact_keys: Vec<String>,
    /// Σ entries per account and currency that the facts must produce (non-zero only), sorted.
    pub balances: Vec<(String, String, i64)>,
    /// Payment statuses, sorted by payment id.
    pub statuses: Vec<(String, String)>,
    /// Deliveries per expected rejection code (and `duplicate`), sorted.
    pub rejections: Vec<(String, usize)>,
}

pub struct Workload {
    pub merchants: Vec<Merchant>,
    pub deliveries: Vec<Delivery>,
    pub facts: Vec<PaymentEvent>,
    pub truth: Truth,
}

fn ok() -> Expect {
    Expect { status: 200, code: None }
}

fn rejected(status: u16, code: &str) -> Expect {
    Expect { status, code: Some(code.into()) }
}

/// A fact as the normaliser will produce it from the rendered delivery; `refs` = (payment, reference, original).
pub(crate) fn fact(
    psp: Psp,
    kind: EventKind,
    (payment, reference, original): (&str, &str, Option<&str>),
    merchant: &str,
    money: Money,
    at: Timestamp,
    source_event_id: String,
) -> PaymentEvent {
    PaymentEvent {
        kind,
        payment_id: format!("{psp}:{payment}"),
        psp,
        psp_reference: reference.into(),
        original_reference: original.map(str::to_owned),
        merchant_id: merchant.into(),
        money,
        fee: None,
        occurred_at: at,
        received_at: at,
        source: Source::Webhook,
        source_event_id,
        attributes: Attributes::default(),
    }
}

/// Generates a workload. Deterministic: the same config gives the same workload, byte for byte once written.
pub fn generate(config: &SimConfig) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let merchants = merchants(&mut rng, config.merchants);
    // 2026-11-01T00:00:00Z, plus a second per payment: event times are part of the output, so they are seeded too.
    let base = 1_761_955_200i64;
    let mut primary: Vec<(render::Rendered, Vec<PaymentEvent>)> = Vec::new();
    for p in 0..config.payments {
        let merchant = &merchants[rng.random_range(0..merchants.len())];
        let currency = Currency::from_code(&merchant.settlement_currency).expect("dimension currencies are ISO");
        let major = rng.random_range(5..500i64);
        let minor = major * 10i64.pow(u32::from(currency.exponent()))
            + rng.random_range(0..10i64.pow(u32::from(currency.exponent())).max(1));
        let money = Money::new(Amount::from_minor(minor), currency);
        let at = base + p as i64;
        let psp = if rng.random_bool(0.5) { Psp::Stripe } else { Psp::Adyen };
        let lifecycle = Lifecycle {
            declined: rng.random_bool(config.decline_rate),
            manual_capture: rng.random_bool(config.manual_capture_rate),
            refund: if rng.random_bool(config.refund_rate) {
                Some(if rng.random_bool(0.5) { minor } else { (minor / 2).max(1) })
            } else {
                None
            },
            chargeback: if rng.random_bool(config.chargeback_rate) { Some(rng.random_bool(0.4)) } else { None },
        };
        let ids =
            Ids { payment: letters(&mut rng, 24, false), refs: (0..4).map(|_| letters(&mut rng, 16, true)).collect() };
        primary.extend(render::lifecycle(psp, &merchant.id, money, at, &lifecycle, &ids));
    }
    let facts: Vec<PaymentEvent> = primary.iter().flat_map(|(_, f)| f.clone()).collect();

    // Order: payments interleave; reorder within windows; some deliveries arrive late (at the end).
    let mut bodies: Vec<(Psp, String)> = primary.into_iter().map(|(r, _)| (r.psp, r.body)).collect();
    for window in bodies.chunks_mut(64) {
        window.shuffle(&mut rng);
    }
    let (mut on_time, late): (Vec<_>, Vec<_>) =
        bodies.into_iter().map(|b| (rng.random_bool(config.late_rate), b)).partition(|(late, _)| !late);
    on_time.extend(late);
    let mut deliveries: Vec<Delivery> = on_time
        .into_iter()
        .map(|(_, (psp, body))| Delivery { seq: 0, psp, fault: "fact", signing: Signing::Valid, expect: ok(), body })
        .collect();

    // Faults: extra deliveries, each a variant of a genuine one, inserted at seeded positions.
    let mut extra = Vec::new();
    for d in &deliveries {
        if rng.random_bool(config.duplicate_rate) {
            extra.push(Delivery { fault: "duplicate", ..d.clone() });
        }
        if rng.random_bool(config.forged_rate) {
            let mut f = d.clone();
            f.fault = "forged";
            f.expect = rejected(400, "signature_mismatch");
            match f.psp {
                Psp::Stripe => f.signing = Signing::Forged,
                Psp::Adyen => f.body = render::forge_adyen(&f.body),
            }
            extra.push(f);
        }
        if rng.random_bool(config.malformed_rate) {
            let mut m = d.clone();
            m.fault = "malformed";
            m.body.truncate(m.body.len() / 2);
            m.expect = rejected(400, "malformed_json");
            extra.push(m);
        }
        if rng.random_bool(config.pan_rate) {
            let mut p = d.clone();
            p.fault = "pan";
            p.body = render::with_pan(p.psp, &p.body);
            p.expect = rejected(422, "pan_detected");
            extra.push(p);
        }
        if d.psp == Psp::Stripe && rng.random_bool(config.unknown_type_rate) {
            let mut u = d.clone();
            u.fault = "unknown_type";
            u.body = render::unknown_type(&u.body);
            u.expect = Expect { status: 200, code: Some("unknown_event_type".into()) };
            extra.push(u);
        }
    }
    for e in extra {
        let at = rng.random_range(0..=deliveries.len());
        deliveries.insert(at, e);
    }
    for (i, d) in deliveries.iter_mut().enumerate() {
        d.seq = i;
    }

    let mut fact_keys: Vec<String> = facts.iter().map(|f| f.fact_key().to_string()).collect();
    fact_keys.sort();
    fact_keys.dedup();
    let mut bal: Vec<(String, String, i64)> = balances(&facts)
        .expect("generated facts post")
        .into_iter()
        .filter(|(_, a)| !a.is_zero())
        .map(|((acc, cur), a)| (acc.to_string(), cur.code().to_owned(), a.minor()))
        .collect();
    bal.sort();
    let mut by_payment: std::collections::BTreeMap<&str, Vec<&PaymentEvent>> = Default::default();
    for f in &facts {
        by_payment.entry(&f.payment_id).or_default().push(f);
    }
    let statuses = by_payment
        .iter()
        .filter_map(|(p, events)| {
            let s = derive_status(events.iter().copied())?;
            Some((p.to_string(), serde_json::to_value(s).ok()?.as_str()?.to_owned()))
        })
        .collect();
    let mut rejections: std::collections::BTreeMap<String, usize> = Default::default();
    for d in &deliveries {
        if d.fault != "fact" {
            *rejections.entry(d.expect.code.clone().unwrap_or_else(|| d.fault.to_owned())).or_default() += 1;
        }
    }
    let truth = Truth {
        seed: config.seed,
        payments: config.payments,
        deliveries: deliveries.len(),
        fact_keys,
        balances: bal,
        statuses,
        rejections: rejections.into_iter().collect(),
    };
    Workload { merchants, deliveries, facts, truth }
}

pub(crate) struct Lifecycle {
    pub declined: bool,
    pub manual_capture: bool,
    pub refund: Option<i64>,
    /// Some(won?)
    pub chargeback: Option<bool>,
}

pub(crate) struct Ids {
    pub payment: String,
    pub refs: Vec<String>,
}

/// Seconds to a timestamp.
pub(crate) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(secs).expect("simulated times are in range")
}
