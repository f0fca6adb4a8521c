//! Any bytes as an Adyen notification: HMAC verification of every item and normalisation refuse or accept, never
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_domain::{Psp, Timestamp};

fuzz_target!(|data: &[u8]| {
    let key = tally_psp::adyen::HmacKey::from_hex("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056")
        .unwrap();
    let _ = tally_psp::adyen::verify_notification(data, std::slice::from_ref(&key));
    let at = Timestamp::from_unix_secs(1_780_000_000).unwrap();
    let _ = tally_psp::normalize(Psp::Adyen, data, at, &tally_psp::Endpoint::default());
});
