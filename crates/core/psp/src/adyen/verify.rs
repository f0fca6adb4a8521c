//! Adyen HMAC: base64(HMAC-SHA256(key = hex-decoded bytes, msg = signing string)), carried per item in
//! `additionalData.hmacSignature`. The signing string is
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//! with missing fields as empty strings and no escaping (merchant references may contain `:`, `\` and `/`).
//! Platform webhooks sign the raw payload instead, in the `HmacSignature` header ([`verify_payload`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tally_domain::Secret;

use super::wire::{self, Body, Notification, NotificationRequestItem};
use crate::SignatureError;

/// An Adyen HMAC key: given as hex in the Customer Area, used as raw bytes.
#[derive(Clone, Debug)]
pub struct HmacKey(Secret<Vec<u8>>);

impl HmacKey {
    pub fn from_hex(hex_key: &str) -> Result<Self, SignatureError> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|e| SignatureError::InvalidSecret(format!("Adyen HMAC key is not hex: {e}")))?;
        if bytes.is_empty() {
            return Err(SignatureError::InvalidSecret("Adyen HMAC key is empty".into()));
        }
        Ok(HmacKey(Secret::new(bytes)))
    }

    fn mac(&self, message: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose()).expect("HMAC accepts keys of any length");
        mac.update(message);
        mac
    }
}

/// The string Adyen signs for one notification item.
pub fn signing_string(item: &NotificationRequestItem) -> String {
    let value = match item.amount.as_ref().and_then(|a| a.value.as_ref()) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let currency = item.amount.as_ref().and_then(|a| a.currency.clone()).unwrap_or_default();
    [
        item.psp_reference.as_str(),
        item.original_reference.as_deref().unwrap_or(""),
        item.merchant_account_code.as_str(),
        item.merchant_reference.as_deref().unwrap_or(""),
        value.as_str(),
        currency.as_str(),
        item.event_code.as_str(),
        item.success.as_str(),
    ]
    .join(":")
}

/// Verifies one item against any of the active keys (key rotation). `index` names the item in errors.
pub fn verify_item(item: &NotificationRequestItem, keys: &[HmacKey], index: usize) -> Result<(), SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let given = item.additional("hmacSignature").ok_or(SignatureError::MissingSignature { index })?;
    let given = B64.decode(given).map_err(|_| SignatureError::ItemMismatch { index })?;
    let message = signing_string(item);
    // `verify_slice` compares in constant time.
    if keys.iter().any(|k| k.mac(message.as_bytes()).verify_slice(&given).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::ItemMismatch { index })
    }
}

/// Parses a standard notification and verifies *every* item: one bad item refuses the whole batch, so that Adyen
/// retries it and no item is lost or half-accepted.
pub fn verify_notification(body: &[u8], keys: &[HmacKey]) -> Result<Notification, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let notification = match wire::parse(body) {
        Ok(Body::Standard(n)) => n,
        Ok(Body::BareItem(item)) => {
            verify_item(&item, keys, 0)?;
            return Ok(Notification { live: None, items: vec![wire::ItemWrapper { item: *item }] });
        }
        Ok(Body::Other(kind)) => {
            return Err(SignatureError::MalformedBody(format!(
                "{kind} is not a standard notification; platform webhooks are verified with the HmacSignature header"
            )))
        }
        Err((_, why)) => return Err(SignatureError::MalformedBody(why)),
    };
    // An empty batch would pass the loop below vacuously: there is nothing signed to accept.
    if notification.items.is_empty() {
        return Err(SignatureError::MalformedBody("notificationItems is empty".into()));
    }
    for (index, wrapper) in notification.items.iter().enumerate() {
        verify_item(&wrapper.item, keys, index)?;
    }
    Ok(notification)
}

/// Verifies the `HmacSignature` header of a platform webhook: base64 HMAC over the raw payload bytes.
pub fn verify_payload(body: &[u8], signature_b64: &str, keys: &[HmacKey]) -> Result<(), SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let given = B64.decode(signature_b64.trim()).map_err(|_| SignatureError::NoMatch)?;
    if keys.iter().any(|k| k.mac(body).verify_slice(&given).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// The `hmacSignature` value Adyen would put on `item`. Used by the workload simulator and tests.
pub fn sign_item(item: &NotificationRequestItem, key: &HmacKey) -> String {
    B64.encode(key.mac(signing_string(item).as_bytes()).finalize().into_bytes())
}
