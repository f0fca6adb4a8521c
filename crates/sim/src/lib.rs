//! `tally sim`: a seeded workload with ground truth (DESIGN §10). The same seed gives byte-identical output.
//!
//! A workload is a merchant dimension, payment lifecycles rendered as the PSPs send them (Stripe Events and Adyen
//! notifications, built from the shared fixtures as templates), faults at known rates, and the ground truth: the
//! facts that must be booked, the balances they must produce, and the rejections that must happen. Facts are
//! *intended* first and rendered second; a test checks that normalising every rendered delivery gives back exactly
//! the intended facts, so the truth does not come from the code under test.

mod dimension;
mod lifecycle;
pub mod psp;
mod render;
mod reports;

pub use dimension::{merchants, merchants_csv, Merchant};
pub use lifecycle::{
    check_run_tag, generate, Daily, Delivery, Expect, Moved, Signing, SimConfig, Truth, TruthFact, Workload, ADYEN_KEY,
    STRIPE_SECRET,
};
pub use render::stripe_header;
pub use reports::{for_workload as reports_for_workload, reports, Injected, ReportConfig, Reports};
