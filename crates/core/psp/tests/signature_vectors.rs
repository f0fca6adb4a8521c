//! Every signature vector in `shared/fixtures` gives the official SDK's verdict.

mod common;

use sha2::{Digest, Sha256};
use tally_domain::Secret;
use tally_psp::adyen::{self, HmacKey};
use tally_psp::stripe::{self, Tolerance};
use tally_psp::SignatureError;

fn stripe_payload(vectors: &serde_json::Value, payload_ref: &str) -> Vec<u8> {
    match payload_ref.strip_prefix("payloads.") {
        Some(name) => vectors["payloads"][name].as_str().unwrap().as_bytes().to_vec(),
        None => common::read(payload_ref),
    }
}

#[test]
fn stripe_positive_vectors_verify_and_fail_when_stale() {
    let vectors = common::json("stripe/signature_vectors.json");
    let positive = vectors["positive"].as_array().unwrap();
    assert!(positive.len() >= 6);
    for v in positive {
        let name = v["name"].as_str().unwrap();
        let body = stripe_payload(&vectors, v["payload_ref"].as_str().unwrap());
        assert_eq!(hex::encode(Sha256::digest(&body)), v["payload_sha256"].as_str().unwrap(), "{name}: bytes differ");
        let secret = vec![Secret::new(v["secret"].as_str().unwrap().to_owned())];
        let header = v["header"].as_str().unwrap();
        let ts = v["timestamp"].as_i64().unwrap();
        assert_eq!(stripe::verify(&body, header, &secret, ts + 10_000_000, Tolerance::Disabled), Ok(ts), "{name}");
        // Within the SDK default tolerance it verifies, past it the timestamp is refused.
        assert_eq!(stripe::verify(&body, header, &secret, ts + 299, Tolerance::Secs(300)), Ok(ts), "{name}");
        assert!(matches!(
            stripe::verify(&body, header, &secret, ts + 301, Tolerance::Secs(300)),
            Err(SignatureError::OutsideTolerance { .. })
        ));
        // Our signer produces the SDK's header byte for byte.
        assert_eq!(stripe::sign(&body, &secret[0], ts), header, "{name}");
        // One flipped byte of the body breaks it.
        let mut tampered = body.clone();
        tampered[0] ^= 1;
        assert_eq!(stripe::verify(&tampered, header, &secret, ts, Tolerance::Disabled), Err(SignatureError::NoMatch));
    }
}

#[test]
fn stripe_negative_and_edge_vectors_give_the_sdk_verdict() {
    let vectors = common::json("stripe/signature_vectors.json");
    let cases = vectors["negative_and_edge"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for v in cases {
        let name = v["name"].as_str().unwrap();
        let body = stripe_payload(&vectors, v["payload_ref"].as_str().unwrap());
        let secret = vec![Secret::new(v["secret"].as_str().unwrap().to_owned())];
        let got = stripe::verify(&body, v["header"].as_str().unwrap(), &secret, 1_700_000_000, Tolerance::Disabled);
        match v["sdk_result"].as_str().unwrap() {
            "valid" => assert!(got.is_ok(), "{name}: {got:?}"),
            invalid => {
                let sdk_message = invalid.strip_prefix("invalid: ").expect("sdk_result is valid or invalid: …");
                let err = got.expect_err(name);
                assert!(err.to_string().eq_ignore_ascii_case(sdk_message), "{name}: ours {err}, SDK {sdk_message}");
            }
        }
    }
}

#[test]
fn adyen_item_vectors_match_the_sdk() {
    let vectors = common::json("adyen/hmac_vectors.json");
    let mut checked = 0;
    for v in vectors["notification_item_vectors"].as_array().unwrap() {
        let signing_string = v["signing_string"]
            .as_str()
            .or_else(|| v["signing_string_for_missing_amount_and_originalReference"].as_str())
            .unwrap();
        // Rebuild the item from the signing string's fields, so that our signing-string builder is what is tested.
        let f: Vec<&str> = signing_string.split(':').collect();
        assert_eq!(f.len(), 8, "{signing_string}");
        let mut item = serde_json::json!({
            "pspReference": f[0], "merchantAccountCode": f[2], "merchantReference": f[3],
            "eventCode": f[6], "success": f[7], "additionalData": {}
        });
        if !f[1].is_empty() {
            item["originalReference"] = f[1].into();
        }
        if !f[4].is_empty() {
            // The Java vector carries the value as the JSON string "0"; numbers are tested below.
            let value: serde_json::Value = if v["from"].as_str().unwrap().contains("JSON string") {
                f[4].into()
            } else {
                f[4].parse::<i64>().unwrap().into()
            };
            item["amount"] = serde_json::json!({"value": value, "currency": f[5]});
        }
        let item: adyen::wire::NotificationRequestItem = serde_json::from_value(item).unwrap();
        assert_eq!(adyen::signing_string(&item), signing_string);
        let (Some(key), Some(expected)) = (v["key_hex"].as_str(), v["expected_b64"].as_str()) else {
            continue;
        };
        let key = HmacKey::from_hex(key).unwrap();
        assert_eq!(adyen::sign_item(&item, &key), expected, "{}", v["from"]);
        let mut signed = item.clone();
        signed.additional_data.insert("hmacSignature".into(), expected.into());
        assert_eq!(adyen::verify_item(&signed, std::slice::from_ref(&key), 0), Ok(()));
        let other = HmacKey::from_hex("00").unwrap();
        assert_eq!(adyen::verify_item(&signed, &[other], 0), Err(SignatureError::ItemMismatch { index: 0 }));
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn adyen_notification_files_verify_with_their_key_and_fail_with_another() {
    let vectors = common::json("adyen/hmac_vectors.json");
    let valid = &vectors["notification_files_valid_with_key"];
    let key = HmacKey::from_hex(valid["key_hex"].as_str().unwrap()).unwrap();
    let wrong = HmacKey::from_hex("0123456789ABCDEF").unwrap();
    for file in valid["files"].as_array().unwrap() {
        let body = common::read(file.as_str().unwrap());
        let n = adyen::verify_notification(&body, std::slice::from_ref(&key)).expect("SDK says valid");
        assert_eq!(n.items.len(), 1);
        assert!(n.items[0].item.merchant_reference.as_deref().unwrap().contains(r"\:/"), "signing string unescaped");
        assert!(matches!(
            adyen::verify_notification(&body, std::slice::from_ref(&wrong)),
            Err(SignatureError::ItemMismatch { .. })
        ));
        // Rotation: a new key first, the old one still active.
        assert!(adyen::verify_notification(&body, &[wrong.clone(), key.clone()]).is_ok());
        assert_eq!(adyen::verify_notification(&body, &[]).unwrap_err(), SignatureError::NoSecretConfigured);
    }
    // Files whose key is unknown: they parse, carry a signature, and do not verify with a key that is not theirs.
    for file in vectors["notification_files_signature_key_unknown"].as_array().unwrap() {
        let body = common::read(file.as_str().unwrap());
        let err = adyen::verify_notification(&body, std::slice::from_ref(&key)).unwrap_err();
        assert_eq!(err, SignatureError::ItemMismatch { index: 0 }, "{file}");
    }
}

#[test]
fn adyen_raw_payload_vectors_match_the_sdk() {
    let vectors = common::json("adyen/hmac_vectors.json");
    let list = vectors["raw_payload_vectors"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for v in list {
        let key = HmacKey::from_hex(v["key_hex"].as_str().unwrap()).unwrap();
        let payload = v["payload"].as_str().unwrap().as_bytes();
        let sig = v["expected_b64"].as_str().unwrap();
        assert_eq!(adyen::verify_payload(payload, sig, std::slice::from_ref(&key)), Ok(()), "{}", v["from"]);
        let mut tampered = payload.to_vec();
        tampered.push(b' ');
        assert_eq!(adyen::verify_payload(&tampered, sig, &[key]), Err(SignatureError::NoMatch));
    }
}
