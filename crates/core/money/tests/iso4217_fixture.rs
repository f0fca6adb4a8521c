//! The compiled-in ISO 4217 table must equal the published list in `shared/fixtures`, row by row.

use std::collections::BTreeMap;

use tally_money::Currency;

fn fixture(name: &str) -> String {
    let path = format!("{}/../../../../shared/fixtures/data/{name}", manifest_dir());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn compiled_table_equals_the_iso4217_fixture() {
    let csv = fixture("iso4217_list_one_2026-01-01.csv");
    let mut expected = BTreeMap::new();
    let mut without_minor_units = Vec::new();
    for line in csv.lines().skip(1) {
        let mut cols = line.splitn(4, ',');
        let (code, numeric, minor) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap());
        match minor.parse::<u8>() {
            Ok(m) => {
                expected.insert(code.to_owned(), (numeric.parse::<u16>().unwrap(), m));
            }
            Err(_) => without_minor_units.push(code.to_owned()),
        }
    }
    let compiled: BTreeMap<_, _> =
        Currency::all().map(|c| (c.code().to_owned(), (c.numeric(), c.exponent()))).collect();
    assert_eq!(compiled, expected);
    assert!(expected.len() > 150, "fixture parsed to only {} rows", expected.len());
    for code in without_minor_units {
        assert!(Currency::from_code(&code).is_err(), "{code} has no minor units and must not be a Currency");
    }
}

#[test]
fn iso_exponents_agree_with_the_iso_column_of_the_cldr_comparison() {
    let csv = fixture("minor_units_iso_vs_cldr.csv");
    let mut checked = 0;
    for line in csv.lines().skip(1) {
        let cols: Vec<_> = line.split(',').collect();
        let Ok(currency) = Currency::from_code(cols[0]) else {
            continue;
        };
        assert_eq!(currency.exponent().to_string(), cols[1], "{}", cols[0]);
        checked += 1;
    }
    assert!(checked > 150);
}

/// The package's directory as cargo or nextest gives it when the test runs (the compile-time value only as a
/// fallback): a test binary reused from another checkout sharing the target directory still reads this checkout's
/// files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
