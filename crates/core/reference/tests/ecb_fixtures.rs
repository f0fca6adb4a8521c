//! The ECB's published files from the shared fixtures: the daily file and the full history (unzipped by the test
//! with the system's `unzip`, as the loader does with its zip reader), which must agree on their common day.

use std::path::PathBuf;
use std::process::Command;

use tally_money::fx::{convert, Rate};
use tally_money::{Amount, Currency};
use tally_reference::ecb::EcbRates;
use time::macros::date;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
        .join("../../../../shared/fixtures/data/ecb")
}

fn history() -> Vec<u8> {
    let out = Command::new("unzip").arg("-p").arg(fixtures().join("eurofxref-hist.zip")).output().expect("unzip");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn the_history_parses_whole_and_agrees_with_the_daily_file() {
    let hist = EcbRates::parse(&history()).unwrap();
    let daily = EcbRates::parse(&std::fs::read(fixtures().join("eurofxref.csv")).unwrap()).unwrap();
    assert_eq!(hist.span(), Some((date!(1999 - 01 - 04), date!(2026 - 10 - 30))));
    assert!(hist.rows > 7000, "{} days", hist.rows);
    let day = date!(2026 - 10 - 30);
    for code in daily.currencies() {
        let (d, h) = (daily.on_or_before(code, day, 0), hist.on_or_before(code, day, 0));
        // The history prints 0.83380 as 0.8338: the same number.
        let value = |p: Option<tally_reference::ecb::Published>| {
            p.map(|p| convert(Amount::from_minor(1_000_000), eur(), Rate::ONE, cur(code), p.rate).unwrap())
        };
        if Currency::from_code(code).is_ok() {
            assert_eq!(value(d), value(h), "{code}");
        }
    }
}

#[test]
fn a_target_holiday_and_a_weekend_take_the_last_business_day() {
    let hist = EcbRates::parse(&history()).unwrap();
    // Easter 2026: Good Friday 3 April and Easter Monday 6 April are TARGET holidays; Thursday 2 April is the last
    // rate before them, for every day through Monday.
    for d in [date!(2026 - 04 - 03), date!(2026 - 04 - 04), date!(2026 - 04 - 05), date!(2026 - 04 - 06)] {
        assert_eq!(hist.on_or_before("USD", d, 4).unwrap().date, date!(2026 - 04 - 02), "{d}");
    }
    assert_eq!(hist.on_or_before("USD", date!(2026 - 04 - 07), 4).unwrap().date, date!(2026 - 04 - 07));
    // The simulator's BHD is not an ECB currency: nothing, ever.
    assert_eq!(hist.on_or_before("BHD", date!(2026 - 04 - 07), 4), None);
    // RUB stopped in March 2022.
    assert_eq!(hist.on_or_before("RUB", date!(2026 - 04 - 07), 4), None);
}

fn cur(code: &str) -> Currency {
    Currency::from_code(code).unwrap()
}

fn eur() -> Currency {
    cur("EUR")
}
