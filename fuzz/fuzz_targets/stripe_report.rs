//! Any bytes as a Stripe itemized report: a report or a refusal, never a panic; a parsed line always obeys
//! net = gross − fee.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for sep in [tally_money::DecimalSeparator::Dot, tally_money::DecimalSeparator::Comma] {
        let options = tally_psp::stripe::report::Options { decimal_separator: sep, ..Default::default() };
        if let Ok(report) = tally_psp::stripe::report::parse("fuzz.csv", data, &options) {
            for l in &report.lines {
                let gross = l.gross.expect("Stripe lines have a gross");
                assert_eq!(gross.amount.checked_sub(l.fee).ok(), Some(l.net.amount));
            }
        }
    }
});
