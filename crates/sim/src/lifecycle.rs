//! Payment lifecycles with realistic ratios, faults at known rates, and the ground truth.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
use tally_money::{Currency, Money};

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
    /// Of manually captured payments: captured in part; of the rest, cancelled; of the rest, left to expire; the
    /// remainder is captured whole.
    pub partial_capture_rate: f64,
    pub cancel_rate: f64,
    pub expire_rate: f64,
    /// Of refunds: the refund fails after it was accepted (Stripe pending → failed; Adyen REFUND_FAILED or a
    /// `success` flip).
    pub refund_failure_rate: f64,
    /// Of payments: rendered in the other mode (Stripe `livemode`, Adyen `live`) — never to be booked.
    pub other_mode_rate: f64,
    /// Of Adyen deliveries: sent together with the next ones in one notification (2–4 items).
    pub batch_rate: f64,
    /// Up to 6 lowercase letters or digits that start every payment and PSP reference: two runs of one seed with
    /// different tags are different payments to the edge and the ledger (`tally demo` tags each run).
    pub run_tag: String,
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
            partial_capture_rate: 0.2,
            cancel_rate: 0.1,
            expire_rate: 0.05,
            refund_failure_rate: 0.1,
            other_mode_rate: 0.005,
            batch_rate: 0.2,
            run_tag: String::new(),
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

/// The ground truth, stated by the simulator in its own terms — what moved per payment, from the lifecycle it
/// drew — never by Tally's posting rules, status derivation or fact keys (issue 12, item 16): a wrong rule in Tally
/// shows as a difference here instead of being mirrored into the expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub payments: usize,
    pub deliveries: usize,
    /// Every fact the PSPs' deliveries state, as (payment id, kind, PSP reference, original reference), sorted: each
    /// must be booked exactly once.
    pub facts: Vec<TruthFact>,
    /// What moved, per payment (sorted by payment id).
    pub moved: Vec<Moved>,
    /// Per account and currency, what the movements leave there (non-zero only, sorted), by the finance identities
    /// of [`Moved::accounts`].
    pub balances: Vec<(String, String, i64)>,
    /// Each payment's final state as the PSP reports it, sorted by payment id.
    pub statuses: Vec<(String, String)>,
    /// Payments whose deliveries came in the other mode (test events at a live endpoint or the reverse): nothing of
    /// them may be booked.
    pub unbooked_payments: Vec<String>,
    /// Deliveries per expected rejection code (and `duplicate`), sorted.
    pub rejections: Vec<(String, usize)>,
    /// What moved per merchant × UTC day × currency (the day of each movement's first statement), sorted: what
    /// the warehouse's daily mart must show.
    pub daily: Vec<Daily>,
    /// The customers' personal data the deliveries carry (e-mails, names, phones, streets; sorted, once each):
    /// none of it may appear in the warehouse.
    pub pii: Vec<String>,
}

/// What moved for one merchant on one UTC day in one currency, in minor units, by the simulator's own rules: a
/// movement is dated by the first delivery that states it (a PSP restating it later does not move it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Daily {
    pub merchant: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub currency: String,
    /// Captured, less what was taken back.
    pub captured: i64,
    /// Refunded, less refunds that failed.
    pub refunded: i64,
    /// Withdrawn by disputes, less what won stages returned.
    pub dispute_withdrawn: i64,
    /// Written off by lost dispute stages.
    pub dispute_lost: i64,
}

/// The daily movements of the stated facts (each named fact once, at its earliest statement).
fn daily(facts: &[PaymentEvent], unbooked: &[String]) -> Vec<Daily> {
    use std::collections::BTreeMap;
    let mut first: BTreeMap<(String, String, String, Option<String>), &PaymentEvent> = BTreeMap::new();
    for f in facts.iter().filter(|f| !unbooked.contains(&f.payment_id)) {
        let name =
            (f.payment_id.clone(), f.kind.as_str().to_owned(), f.psp_reference.clone(), f.original_reference.clone());
        let e = first.entry(name).or_insert(f);
        if f.occurred_at < e.occurred_at {
            *e = f;
        }
    }
    let mut days: BTreeMap<(String, String, String), Daily> = BTreeMap::new();
    for f in first.values() {
        let secs = f.occurred_at.unix_secs();
        let day = time::OffsetDateTime::from_unix_timestamp(secs).expect("simulated times are in range").date();
        let key = (f.merchant_id.clone(), day.to_string(), f.money.currency.code().to_owned());
        let d = days.entry(key.clone()).or_insert_with(|| Daily {
            merchant: key.0,
            day: key.1,
            currency: key.2,
            captured: 0,
            refunded: 0,
            dispute_withdrawn: 0,
            dispute_lost: 0,
        });
        let a = f.money.amount.minor();
        match f.kind {
            EventKind::Captured => d.captured += a,
            EventKind::CaptureReversed => d.captured -= a,
            EventKind::Refunded => d.refunded += a,
            EventKind::RefundFailed => d.refunded -= a,
            EventKind::ChargebackOpened | EventKind::SecondChargeback => d.dispute_withdrawn += a,
            EventKind::ChargebackWon | EventKind::PrearbitrationWon => d.dispute_withdrawn -= a,
            EventKind::ChargebackLost | EventKind::PrearbitrationLost => d.dispute_lost += a,
            _ => {}
        }
    }
    days.into_values().collect()
}

/// One fact a delivery states, named as the ledger's event log names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct TruthFact {
    pub payment_id: String,
    pub kind: String,
    pub psp_reference: String,
    pub original_reference: Option<String>,
}

/// What moved for one payment, in ISO 4217 minor units of its currency, as the PSP's reports would show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Moved {
    pub payment_id: String,
    pub psp: String,
    pub merchant: String,
    pub currency: String,
    pub authorized: i64,
    /// Captured and not reversed.
    pub captured: i64,
    /// Refunded and not failed.
    pub refunded: i64,
    /// Withdrawn by disputes (each chargeback stage that takes the funds).
    pub dispute_withdrawn: i64,
    /// Returned by won dispute stages.
    pub dispute_returned: i64,
    /// Written off: lost dispute stages.
    pub dispute_lost: i64,
    /// PSP fees charged (dispute fees).
    pub fees: i64,
    pub status: String,
}

impl Moved {
    /// The finance identities (DESIGN §4), stated once here and independently of Tally's per-fact postings:
    /// the PSP owes what it captured, less refunds, dispute withdrawals and fees, plus what disputes returned; the
    /// merchant is owed what was captured less refunds; open disputes sit in the merchant's reserve; lost ones are
    /// written off; fees are an expense.
    pub fn accounts(&self) -> Vec<(String, i64)> {
        vec![
            (
                format!("psp_receivable:{}", self.psp),
                self.captured - self.refunded - self.dispute_withdrawn + self.dispute_returned - self.fees,
            ),
            (format!("merchant_payable:{}", self.merchant), -(self.captured - self.refunded)),
            (
                format!("dispute_reserve:{}", self.merchant),
                self.dispute_withdrawn - self.dispute_returned - self.dispute_lost,
            ),
            ("chargeback_losses".to_owned(), self.dispute_lost),
            ("psp_fees".to_owned(), self.fees),
        ]
    }
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

/// A run tag starts every payment and PSP reference: up to 6 lowercase letters or digits (so that Adyen's
/// 16-character references keep 10 random letters).
pub fn check_run_tag(tag: &str) -> Result<(), String> {
    match tag.len() <= 6 && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        true => Ok(()),
        false => Err(format!("run tag {tag:?}: up to 6 lowercase letters or digits")),
    }
}

/// Generates a workload. Deterministic: the same config gives the same workload, byte for byte once written.
pub fn generate(config: &SimConfig) -> Workload {
    if let Err(e) = check_run_tag(&config.run_tag) {
        panic!("{e}");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let merchants = merchants(&mut rng, config.merchants);
    // 2025-11-01T00:00:00Z, plus 20 seconds per payment (20,000 payments span four and a half days, so that the
    // warehouse's days close and late facts restate them): event times are part of the output, so they are
    // seeded too.
    let base = 1_761_955_200i64;
    let mut primary: Vec<(render::Rendered, Vec<PaymentEvent>)> = Vec::new();
    let mut moved: Vec<Moved> = Vec::new();
    let mut unbooked_payments = Vec::new();
    let mut pii: Vec<String> = Vec::new();
    for p in 0..config.payments {
        let merchant = &merchants[rng.random_range(0..merchants.len())];
        let currency = Currency::from_code(&merchant.settlement_currency).expect("dimension currencies are ISO");
        let psp = if rng.random_bool(0.5) { Psp::Stripe } else { Psp::Adyen };
        // Every amount a whole number of the PSP's wire units (Adyen sends IDR without decimals, …).
        let unit = render::wire_unit(psp, currency);
        let fit = |x: i64| (x / unit).max(1) * unit;
        let major = rng.random_range(5..500i64);
        let scale = 10i64.pow(u32::from(currency.exponent()));
        let authorized = fit(major * scale + rng.random_range(0..scale.max(1)));
        let at = base + 20 * p as i64;
        let declined = rng.random_bool(config.decline_rate);
        let manual_capture = rng.random_bool(config.manual_capture_rate);
        let release = if !manual_capture {
            Release::CapturedAll
        } else {
            let part = fit(authorized * rng.random_range(30..90i64) / 100);
            if rng.random_bool(config.partial_capture_rate) && part < authorized {
                Release::CapturedPart(part)
            } else if rng.random_bool(config.cancel_rate) {
                Release::Canceled
            } else if rng.random_bool(config.expire_rate) {
                Release::Expired
            } else {
                Release::CapturedAll
            }
        };
        let mut lifecycle =
            Lifecycle { declined, manual_capture, authorized, release, refund: None, dispute: None, live: false };
        let captured = lifecycle.captured();
        if captured > 0 && rng.random_bool(config.refund_rate) {
            let amount = if rng.random_bool(0.5) { captured } else { fit(captured / 2) };
            let failure = rng.random_bool(config.refund_failure_rate).then(|| match psp {
                Psp::Adyen if rng.random_bool(0.5) => RefundFailure::Flipped,
                _ => RefundFailure::Failed,
            });
            lifecycle.refund = Some(RefundPlan { amount, failure });
        }
        if captured > 0 && rng.random_bool(config.chargeback_rate) {
            let part = fit(captured * rng.random_range(20..80i64) / 100);
            let end = match (psp, rng.random_range(0..10u8)) {
                (_, 0..=3) => DisputeEnd::Lost,
                (_, 4..=6) => DisputeEnd::Won,
                (Psp::Stripe, _) if part < captured => DisputeEnd::PartlyWon(part),
                (Psp::Stripe, _) => DisputeEnd::Lost,
                (Psp::Adyen, 7 | 8) => DisputeEnd::SecondWon,
                (Psp::Adyen, _) => DisputeEnd::SecondLost,
            };
            // Stripe charges a dispute fee on the withdrawal (15 units of the currency, here).
            let fee = if psp == Psp::Stripe && rng.random_bool(0.5) { fit(15 * scale) } else { 0 };
            lifecycle.dispute = Some(DisputePlan { amount: captured, end, fee });
        }
        lifecycle.live = rng.random_bool(config.other_mode_rate);
        let tag = &config.run_tag;
        let ids = Ids {
            payment: format!("{tag}{}", letters(&mut rng, 24 - tag.len(), false)),
            refs: (0..4)
                .map(|_| format!("{}{}", tag.to_uppercase(), letters(&mut rng, 16 - tag.len(), true)))
                .collect(),
        };
        let rendered = render::lifecycle(psp, &merchant.id, currency, at, &lifecycle, &ids);
        if !lifecycle.live {
            let who = render::Person::of(&ids.payment);
            pii.extend([who.email, who.name, who.phone, who.street]);
        }
        let payment_id = rendered.first().and_then(|(_, f)| f.first()).map(|f| f.payment_id.clone());
        let payment_id = payment_id.expect("every lifecycle states a fact");
        if lifecycle.live {
            unbooked_payments.push(payment_id);
            primary.extend(rendered.into_iter().map(|(r, _)| (r, Vec::new())));
        } else {
            moved.push(lifecycle.moved(payment_id, psp, &merchant.id, currency));
            primary.extend(rendered);
        }
    }
    let facts: Vec<PaymentEvent> = primary.iter().flat_map(|(_, f)| f.clone()).collect();

    // Order: payments interleave; reorder within windows; some deliveries arrive late (at the end).
    let mut bodies: Vec<(Psp, bool, String)> = primary.into_iter().map(|(r, _)| (r.psp, r.live, r.body)).collect();
    for window in bodies.chunks_mut(64) {
        window.shuffle(&mut rng);
    }
    let (mut on_time, late): (Vec<_>, Vec<_>) =
        bodies.into_iter().map(|b| (rng.random_bool(config.late_rate), b)).partition(|(late, _)| !late);
    on_time.extend(late);
    let deliveries: Vec<Delivery> = on_time
        .into_iter()
        .map(|(_, (psp, live, body))| match live {
            false => Delivery { seq: 0, psp, fault: "fact", signing: Signing::Valid, expect: ok(), body },
            // Acknowledged and kept, never booked.
            true => Delivery {
                seq: 0,
                psp,
                fault: "other_mode",
                signing: Signing::Valid,
                expect: Expect { status: 200, code: Some("other_mode".into()) },
                body,
            },
        })
        .collect();
    // Adyen sends several notification items in one request: merge runs of genuine Adyen deliveries.
    let mut batched: Vec<Delivery> = Vec::with_capacity(deliveries.len());
    let mut pending_items = 0usize;
    for d in deliveries {
        let mergeable = d.psp == Psp::Adyen && d.fault == "fact";
        match batched.last_mut() {
            Some(last) if mergeable && pending_items > 0 && last.psp == Psp::Adyen && last.fault == "fact" => {
                last.body = render::merge_adyen(&last.body, &d.body);
                pending_items -= 1;
            }
            _ => {
                pending_items =
                    if mergeable && rng.random_bool(config.batch_rate) { rng.random_range(1..=3) } else { 0 };
                batched.push(d);
            }
        }
    }
    let mut deliveries = batched;

    // Faults: extra deliveries, each a variant of a genuine one, inserted at seeded positions.
    let mut extra = Vec::new();
    for d in deliveries.iter().filter(|d| d.fault == "fact") {
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

    let mut truth_facts: Vec<TruthFact> = facts
        .iter()
        .map(|f| TruthFact {
            payment_id: f.payment_id.clone(),
            kind: f.kind.as_str().to_owned(),
            psp_reference: f.psp_reference.clone(),
            original_reference: f.original_reference.clone(),
        })
        .collect();
    truth_facts.sort();
    truth_facts.dedup();
    moved.sort_by(|a, b| a.payment_id.cmp(&b.payment_id));
    let mut sums: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for m in &moved {
        for (account, amount) in m.accounts() {
            *sums.entry((account, m.currency.clone())).or_default() += amount;
        }
    }
    let bal: Vec<(String, String, i64)> =
        sums.into_iter().filter(|(_, a)| *a != 0).map(|((acc, cur), a)| (acc, cur, a)).collect();
    let statuses = moved.iter().map(|m| (m.payment_id.clone(), m.status.clone())).collect();
    unbooked_payments.sort();
    let mut rejections: std::collections::BTreeMap<String, usize> = Default::default();
    for d in &deliveries {
        if d.fault != "fact" {
            *rejections.entry(d.expect.code.clone().unwrap_or_else(|| d.fault.to_owned())).or_default() += 1;
        }
    }
    let daily = daily(&facts, &unbooked_payments);
    pii.sort();
    pii.dedup();
    let truth = Truth {
        daily,
        pii,
        seed: config.seed,
        payments: config.payments,
        deliveries: deliveries.len(),
        facts: truth_facts,
        moved,
        balances: bal,
        statuses,
        unbooked_payments,
        rejections: rejections.into_iter().collect(),
    };
    Workload { merchants, deliveries, facts, truth }
}

/// One payment as the simulator draws it, in ISO 4217 minor units.
pub(crate) struct Lifecycle {
    pub declined: bool,
    pub manual_capture: bool,
    pub authorized: i64,
    /// What became of the authorization (automatic capture: always `CapturedAll`).
    pub release: Release,
    pub refund: Option<RefundPlan>,
    pub dispute: Option<DisputePlan>,
    /// Rendered in live mode, at Tally's test endpoint: the other mode.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    CapturedAll,
    /// Captured in part; the rest of the authorization released (no Refund object on Stripe basil).
    CapturedPart(i64),
    Canceled,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundFailure {
    /// Stripe: `pending` then `failed`; Adyen: REFUND, then REFUND_FAILED.
    Failed,
    /// Adyen: REFUND with `success=true`, then the same with `success=false`.
    Flipped,
}

pub(crate) struct RefundPlan {
    pub amount: i64,
    pub failure: Option<RefundFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisputeEnd {
    Won,
    Lost,
    /// Stripe: part of the funds reinstated (the amount), the dispute then closed as lost.
    PartlyWon(i64),
    /// Adyen: reversed, then a second chargeback, then pre-arbitration won or lost.
    SecondWon,
    SecondLost,
}

pub(crate) struct DisputePlan {
    pub amount: i64,
    pub end: DisputeEnd,
    /// A dispute fee (Stripe), on the withdrawal's balance transaction.
    pub fee: i64,
}

impl Lifecycle {
    pub(crate) fn captured(&self) -> i64 {
        match (self.declined, self.release) {
            (true, _) => 0,
            (false, Release::CapturedAll) => self.authorized,
            (false, Release::CapturedPart(x)) => x,
            (false, Release::Canceled | Release::Expired) => 0,
        }
    }

    /// What moved, and the state the PSP reports at the end — from the lifecycle alone.
    pub(crate) fn moved(&self, payment_id: String, psp: Psp, merchant: &str, currency: Currency) -> Moved {
        let captured = self.captured();
        let refunded = self.refund.as_ref().filter(|r| r.failure.is_none()).map_or(0, |r| r.amount);
        let (mut withdrawn, mut returned, mut lost, mut fees) = (0, 0, 0, 0);
        if let Some(d) = &self.dispute {
            fees = d.fee;
            (withdrawn, returned, lost) = match d.end {
                DisputeEnd::Won => (d.amount, d.amount, 0),
                DisputeEnd::Lost => (d.amount, 0, d.amount),
                DisputeEnd::PartlyWon(r) => (d.amount, r, d.amount - r),
                DisputeEnd::SecondWon => (2 * d.amount, 2 * d.amount, 0),
                DisputeEnd::SecondLost => (2 * d.amount, d.amount, d.amount),
            };
        }
        let status = match (&self.dispute, self.release) {
            _ if self.declined => "authorization_failed",
            (_, Release::Canceled | Release::Expired) => "canceled",
            (Some(d), _) if matches!(d.end, DisputeEnd::Won | DisputeEnd::SecondWon) => "chargeback_won",
            (Some(_), _) => "chargeback_lost",
            (None, _) if refunded > 0 && refunded == captured => "refunded",
            (None, _) if refunded > 0 => "partially_refunded",
            (None, _) => "captured",
        };
        Moved {
            payment_id,
            psp: psp.as_str().to_owned(),
            merchant: merchant.to_owned(),
            currency: currency.code().to_owned(),
            authorized: if self.declined { 0 } else { self.authorized },
            captured,
            refunded,
            dispute_withdrawn: withdrawn,
            dispute_returned: returned,
            dispute_lost: lost,
            fees,
            status: status.to_owned(),
        }
    }
}

pub(crate) struct Ids {
    pub payment: String,
    pub refs: Vec<String>,
}

/// Seconds to a timestamp.
pub(crate) fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(secs).expect("simulated times are in range")
}
