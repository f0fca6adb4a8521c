//! Any bytes as an Adyen Settlement details report: a report or a refusal, never a panic; where gross and net share
//! a currency, a parsed line obeys net = gross − fee.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for batch in [None, Some(7)] {
        if let Ok(report) = tally_psp::adyen::report::parse("fuzz.csv", data, batch) {
            for l in &report.lines {
                if let Some(g) = l.gross.filter(|g| g.currency == l.net.currency) {
                    assert_eq!(g.amount.checked_sub(l.fee).ok(), Some(l.net.amount));
                }
            }
        }
    }
});
