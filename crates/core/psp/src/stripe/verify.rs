//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over the raw body, as the official SDKs verify it.
//!
//! The header is parsed exactly like stripe-python 16.1.0 (`split(",")`, then `split("=")`; no trimming, so
//! `t=…, v1=…` has no `v1` key), except that the timestamp must be plain ASCII digits. Every `v1` is tried against
//! every configured secret (secret rotation: several active secrets; Stripe's own rotation: several `v1`s), in
//! constant time per comparison. The tolerance rejects only *old* timestamps, as the SDKs do.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tally_domain::Secret;

use crate::SignatureError;

/// The SDKs' default: 300 seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// How old a signed timestamp may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// Reject timestamps older than this many seconds before `now`.
    Secs(u64),
    /// Accept any timestamp. Only for replaying recorded deliveries and for the SDK's test vectors.
    Disabled,
}

/// Verifies a delivery. Returns the signed timestamp.
pub fn verify(
    body: &[u8],
    header: &str,
    secrets: &[Secret<String>],
    now_unix: i64,
    tolerance: Tolerance,
) -> Result<i64, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    // An empty key would let anyone compute a valid signature.
    if secrets.iter().any(|s| s.expose().is_empty()) {
        return Err(SignatureError::InvalidSecret("a Stripe endpoint secret is empty".into()));
    }
    let (timestamp, signatures) = parse_header(header)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignatureWithScheme);
    }
    let matched = secrets.iter().any(|secret| {
        let mac = signed_mac(secret.expose().as_bytes(), timestamp, body);
        // The SDKs compare lowercase hex strings: anything else never matches. `verify_slice` is constant-time.
        signatures.iter().filter(|sig| is_lower_hex(sig)).any(|sig| match hex::decode(sig) {
            Ok(bytes) => mac.clone().verify_slice(&bytes).is_ok(),
            Err(_) => false,
        })
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    if let Tolerance::Secs(secs) = tolerance {
        // `0` disables the check in the SDKs (`if tolerance and …`); keep that meaning.
        let limit = now_unix.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
        if secs > 0 && timestamp < limit {
            return Err(SignatureError::OutsideTolerance { timestamp, now: now_unix, tolerance_secs: secs });
        }
    }
    Ok(timestamp)
}

/// Produces a header for `body`, as Stripe does. Used by the workload simulator and tests.
pub fn sign(body: &[u8], secret: &Secret<String>, timestamp: i64) -> String {
    let mac = signed_mac(secret.expose().as_bytes(), timestamp, body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn signed_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_header(header: &str) -> Result<(i64, Vec<&str>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let mut parts = item.split('=');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        match key {
            "t" if timestamp.is_none() => {
                let v = value.ok_or(SignatureError::MalformedHeader)?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::MalformedHeader);
                }
                timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::MalformedHeader)?);
            }
            "v1" => signatures.push(value.ok_or(SignatureError::MalformedHeader)?),
            _ => {}
        }
    }
    Ok((timestamp.ok_or(SignatureError::MalformedHeader)?, signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<Secret<String>> {
        list.iter().map(|s| Secret::new((*s).to_owned())).collect()
    }

    #[test]
    fn sign_then_verify_and_every_way_to_fail() {
        let s = secrets(&["whsec_a"]);
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, &s[0], 1_700_000_000);
        assert_eq!(verify(body, &header, &s, 1_700_000_100, Tolerance::Secs(300)), Ok(1_700_000_000));
        assert_eq!(
            verify(body, &header, &s, 1_700_000_301, Tolerance::Secs(300)),
            Err(SignatureError::OutsideTolerance { timestamp: 1_700_000_000, now: 1_700_000_301, tolerance_secs: 300 })
        );
        // Only old timestamps are rejected, and 0 disables the check (SDK semantics).
        assert!(verify(body, &header, &s, 1_600_000_000, Tolerance::Secs(300)).is_ok());
        assert!(verify(body, &header, &s, 1_800_000_000, Tolerance::Secs(0)).is_ok());
        assert_eq!(verify(b"{}", &header, &s, 1_700_000_000, Tolerance::Disabled), Err(SignatureError::NoMatch));
        assert_eq!(
            verify(body, &header, &[], 1_700_000_000, Tolerance::Disabled),
            Err(SignatureError::NoSecretConfigured)
        );
        for bad in ["", "v1=abc", "t=,v1=ab", "t=12a,v1=ab", "t=-5,v1=ab", "t"] {
            assert_eq!(verify(body, bad, &s, 0, Tolerance::Disabled), Err(SignatureError::MalformedHeader), "{bad}");
        }
        assert_eq!(verify(body, "t=1", &s, 0, Tolerance::Disabled), Err(SignatureError::NoSignatureWithScheme));
        assert_eq!(verify(body, "t=1,v1=zz", &s, 0, Tolerance::Disabled), Err(SignatureError::NoMatch));
        // The SDK compares lowercase hex strings, so an uppercased signature does not match.
        let upper =
            header.replace(header.split("v1=").nth(1).unwrap(), &header.split("v1=").nth(1).unwrap().to_uppercase());
        assert_eq!(verify(body, &upper, &s, 1_700_000_000, Tolerance::Disabled), Err(SignatureError::NoMatch));
        assert!(matches!(
            verify(body, &header, &secrets(&["whsec_a", ""]), 1_700_000_000, Tolerance::Disabled),
            Err(SignatureError::InvalidSecret(_))
        ));
    }

    #[test]
    fn any_active_secret_verifies_during_rotation() {
        let body = b"{}";
        let old = Secret::new("whsec_old".to_owned());
        let header = sign(body, &old, 10);
        assert!(verify(body, &header, &secrets(&["whsec_new", "whsec_old"]), 10, Tolerance::Disabled).is_ok());
        assert_eq!(
            verify(body, &header, &secrets(&["whsec_new"]), 10, Tolerance::Disabled),
            Err(SignatureError::NoMatch)
        );
    }
}
