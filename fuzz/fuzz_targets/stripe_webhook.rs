//! Any bytes as a Stripe delivery: the first line is the `Stripe-Signature` header, the rest the body. Verification
//! and normalisation refuse or accept, never panic; a forged body never verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_domain::{Psp, Secret, Timestamp};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = (String::from_utf8_lossy(&data[..split]), &data[(split + 1).min(data.len())..]);
    let secrets = [Secret::new("whsec_fuzz".to_owned())];
    let _ = tally_psp::stripe::verify(body, &header, &secrets, 1_780_000_000, tally_psp::stripe::Tolerance::Secs(300));
    let at = Timestamp::from_unix_secs(1_780_000_000).unwrap();
    let _ = tally_psp::normalize(Psp::Stripe, body, at, &tally_psp::Endpoint::default());
    let _ = tally_psp::normalize(Psp::Stripe, body, at, &tally_psp::Endpoint { live: true, ..Default::default() });
});
