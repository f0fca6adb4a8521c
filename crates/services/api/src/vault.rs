//! Encryption at rest of what the API keeps about a customer (the payment-method token): AES-256-GCM with a fresh
//! 96-bit nonce per value and the row's id as associated data (a sealed value moved to another row does not open).
//! Each sealed value names the key that sealed it, so keys rotate: the active key seals, every configured key opens.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use tally_domain::Secret;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("encryption key {0:?}: {1}")]
    BadKey(String, String),
    #[error("no encryption key is configured (api.encryption.keys)")]
    NoKeys,
    #[error("the active encryption key {0:?} is not among the configured keys")]
    NoActive(String),
    #[error("a value was sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("a sealed value does not open: wrong key, another row's value, or tampered")]
    Corrupt,
}

pub struct Vault {
    active: String,
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Vault").field("active", &self.active).field("keys", &ids).finish()
    }
}

impl Vault {
    /// `keys`: (key id, base64 of 32 bytes); `active`: the id new values are sealed with.
    pub fn new(keys: &[(String, Secret<String>)], active: &str) -> Result<Self, VaultError> {
        if keys.is_empty() {
            return Err(VaultError::NoKeys);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (id, key) in keys {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.expose().trim())
                .map_err(|e| VaultError::BadKey(id.clone(), format!("not base64: {e}")))?;
            if bytes.len() != 32 {
                return Err(VaultError::BadKey(id.clone(), format!("{} bytes, AES-256 needs 32", bytes.len())));
            }
            let cipher =
                Aes256Gcm::new_from_slice(&bytes).map_err(|e| VaultError::BadKey(id.clone(), e.to_string()))?;
            out.push((id.clone(), cipher));
        }
        if !out.iter().any(|(id, _)| id == active) {
            return Err(VaultError::NoActive(active.to_owned()));
        }
        Ok(Vault { active: active.to_owned(), keys: out })
    }

    /// A new random key, base64 (for `tally api new-key`, and tests).
    pub fn generate_key() -> Secret<String> {
        let key: [u8; 32] = rand::random();
        Secret::new(base64::engine::general_purpose::STANDARD.encode(key))
    }

    /// Seals `plain` for the row `aad`: (nonce ‖ ciphertext ‖ tag, the id of the key).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> (Vec<u8>, String) {
        let (_, cipher) = self.keys.iter().find(|(id, _)| *id == self.active).expect("checked in new");
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("AES-GCM encryption of a bounded value cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        (out, self.active.clone())
    }

    /// Opens what [`Vault::seal`] sealed for the same row with the key `key_id`.
    pub fn open(&self, sealed: &[u8], key_id: &str, aad: &[u8]) -> Result<Secret<String>, VaultError> {
        let (_, cipher) =
            self.keys.iter().find(|(id, _)| id == key_id).ok_or_else(|| VaultError::UnknownKey(key_id.to_owned()))?;
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::Corrupt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain =
            cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| VaultError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(active: &str) -> Vault {
        let k1 = (String::from("k1"), Secret::new(base64::engine::general_purpose::STANDARD.encode([1u8; 32])));
        let k2 = (String::from("k2"), Secret::new(base64::engine::general_purpose::STANDARD.encode([2u8; 32])));
        Vault::new(&[k1, k2], active).expect("a vault")
    }

    #[test]
    fn a_sealed_token_opens_for_its_row_only_and_never_contains_the_plain_text() {
        let v = vault("k1");
        let (sealed, key) = v.seal(b"pm_card_visa", b"row-1");
        assert_eq!(key, "k1");
        assert!(!sealed.windows(12).any(|w| w == b"pm_card_visa"));
        assert_eq!(v.open(&sealed, &key, b"row-1").expect("opens").expose(), "pm_card_visa");
        assert!(matches!(v.open(&sealed, &key, b"row-2"), Err(VaultError::Corrupt)));
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(matches!(v.open(&tampered, &key, b"row-1"), Err(VaultError::Corrupt)));
        assert!(matches!(v.open(&sealed, "k2", b"row-1"), Err(VaultError::Corrupt)));
        assert!(matches!(v.open(&sealed, "k9", b"row-1"), Err(VaultError::UnknownKey(_))));
        // The same value sealed twice differs (fresh nonce).
        assert_ne!(v.seal(b"pm_card_visa", b"row-1").0, sealed);
    }

    #[test]
    fn after_rotation_new_values_use_the_new_key_and_old_ones_still_open() {
        let (old, old_key) = vault("k1").seal(b"tok_1", b"r");
        let rotated = vault("k2");
        let (new, new_key) = rotated.seal(b"tok_2", b"r");
        assert_eq!(new_key, "k2");
        assert_eq!(rotated.open(&old, &old_key, b"r").expect("old opens").expose(), "tok_1");
        assert_eq!(rotated.open(&new, &new_key, b"r").expect("new opens").expose(), "tok_2");
    }

    #[test]
    fn bad_keys_are_refused_with_their_id() {
        let short = (String::from("short"), Secret::new(base64::engine::general_purpose::STANDARD.encode([0u8; 16])));
        assert!(matches!(Vault::new(&[short], "short"), Err(VaultError::BadKey(id, _)) if id == "short"));
        assert!(matches!(Vault::new(&[], "k"), Err(VaultError::NoKeys)));
        let k = (String::from("k1"), Vault::generate_key());
        assert!(matches!(Vault::new(&[k], "k2"), Err(VaultError::NoActive(_))));
    }
}
