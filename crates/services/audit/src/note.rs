//! Signed notes (C2SP `signed-note`, as Go's `golang.org/x/mod/sumdb/note`) with Ed25519 keys, and the tree head
//! they sign: a C2SP `tlog-checkpoint` (origin line, tree size, base64 root hash).
//!
//! A note is its text (ending in a newline), a blank line, and one line per signature: `— NAME BASE64` where BASE64
//! is the 4-byte key hash followed by the 64-byte Ed25519 signature of the text. Keys are written as Go writes
//! them: a verifier key `NAME+HASH+BASE64(0x01 ‖ public key)`, a signer key `PRIVATE+KEY+NAME+HASH+BASE64(0x01 ‖
//! seed)`, HASH being 8 hex digits of the key hash = the first 4 bytes of SHA-256(NAME ‖ 0x0A ‖ 0x01 ‖ public key).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const ALG_ED25519: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    Key(String),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("no signature by {0} verifies this note")]
    Unverified(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
}

fn key_hash(name: &str, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+' || c.is_control())
}

/// Signs notes with one Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    hash: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}, <secret>)", self.name)
    }
}

impl NoteSigner {
    /// 32 bytes of seed for a new key, from the operating system's random source.
    pub fn random_seed() -> std::io::Result<[u8; 32]> {
        use std::io::Read;
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(seed)
    }

    /// A new key from 32 bytes of seed: (signer key text, verifier key text).
    pub fn generate(name: &str, seed: [u8; 32]) -> Result<(String, String), NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Key(format!("name {name:?}: no spaces or '+'")));
        }
        let key = SigningKey::from_bytes(&seed);
        let public = [&[ALG_ED25519][..], key.verifying_key().as_bytes()].concat();
        let hash = key_hash(name, &public);
        let private = [&[ALG_ED25519][..], &seed[..]].concat();
        Ok((
            format!("PRIVATE+KEY+{name}+{hash:08x}+{}", B64.encode(private)),
            format!("{name}+{hash:08x}+{}", B64.encode(public)),
        ))
    }

    pub fn parse(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| NoteError::Key("not a signer key".into()))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("expected PRIVATE+KEY+NAME+HASH+KEY".into()));
        };
        // Never the decoder's message: it quotes the offending character of the secret.
        let bytes = B64.decode(key).map_err(|_| NoteError::Key("the key is not base64".into()))?;
        let [ALG_ED25519, seed @ ..] = bytes.as_slice() else {
            return Err(NoteError::Key("not an Ed25519 key".into()));
        };
        let seed: [u8; 32] = seed.try_into().map_err(|_| NoteError::Key("an Ed25519 seed is 32 bytes".into()))?;
        let key = SigningKey::from_bytes(&seed);
        let public = [&[ALG_ED25519][..], key.verifying_key().as_bytes()].concat();
        let computed = key_hash(name, &public);
        if !valid_name(name) || format!("{computed:08x}") != hash {
            return Err(NoteError::Key("its name or key hash does not match its key".into()));
        }
        Ok(NoteSigner { name: name.to_owned(), key, hash: computed })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key text for this signer's key.
    pub fn verifier_key(&self) -> String {
        let public = [&[ALG_ED25519][..], self.key.verifying_key().as_bytes()].concat();
        format!("{}+{:08x}+{}", self.name, self.hash, B64.encode(public))
    }

    /// The signed note of `text` (which must be non-empty lines, each ending in a newline).
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
            return Err(NoteError::Malformed("a note's text is non-empty lines, each ending in a newline".into()));
        }
        let sig = self.key.sign(text.as_bytes());
        let blob = [&self.hash.to_be_bytes()[..], &sig.to_bytes()[..]].concat();
        Ok(format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(blob)))
    }
}

/// Verifies notes signed by one key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    hash: u32,
    text: String,
}

impl NoteVerifier {
    pub fn parse(text: &str) -> Result<NoteVerifier, NoteError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("expected NAME+HASH+KEY".into()));
        };
        let bytes = B64.decode(key).map_err(|e| NoteError::Key(e.to_string()))?;
        let [ALG_ED25519, public @ ..] = bytes.as_slice() else {
            return Err(NoteError::Key("not an Ed25519 key".into()));
        };
        let public: [u8; 32] = public.try_into().map_err(|_| NoteError::Key("an Ed25519 key is 32 bytes".into()))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|e| NoteError::Key(e.to_string()))?;
        let computed = key_hash(name, &bytes);
        if !valid_name(name) || format!("{computed:08x}") != hash {
            return Err(NoteError::Key("its name or key hash does not match its key".into()));
        }
        Ok(NoteVerifier { name: name.to_owned(), key, hash: computed, text: text.trim().to_owned() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key as text (`NAME+HASH+KEY`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The note's text, if a signature line of this key verifies it.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split =
            note.rfind("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("the signature lines must end in a newline".into()));
        }
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed(format!("not a signature line: {line:?}")));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed(format!("not a signature line: {line:?}")));
            };
            let Ok(blob) = B64.decode(blob) else { continue };
            if name != self.name || blob.len() != 68 || blob[..4] != self.hash.to_be_bytes() {
                continue;
            }
            let sig = Signature::from_slice(&blob[4..]).map_err(|e| NoteError::Malformed(e.to_string()))?;
            if self.key.verify_strict(text.as_bytes(), &sig).is_ok() {
                return Ok(text);
            }
        }
        Err(NoteError::Unverified(self.name.clone()))
    }
}

/// A tree head: the log's origin (its name), size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The C2SP tlog-checkpoint body: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: &str| NoteError::Checkpoint(why.to_owned());
        let mut lines = text.lines();
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| bad("no tree size"))?;
        let root = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| <[u8; 32]>::try_from(r.as_slice()).ok())
            .ok_or_else(|| bad("no base64 SHA-256 root hash"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_not_with_another_or_edited() {
        let (skey, vkey) = NoteSigner::generate("tally.test", [7u8; 32]).unwrap();
        let signer = NoteSigner::parse(&skey).unwrap();
        assert_eq!(signer.verifier_key(), vkey);
        let verifier = NoteVerifier::parse(&vkey).unwrap();
        let cp = Checkpoint { origin: "tally.test/audit".into(), size: 3, root: [9u8; 32] };
        let note = signer.sign(&cp.body()).unwrap();
        assert!(note.starts_with("tally.test/audit\n3\n"));
        let text = verifier.open(&note).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), cp);
        let edited = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(verifier.open(&edited), Err(NoteError::Unverified(_))));
        let (_, other) = NoteSigner::generate("tally.test", [8u8; 32]).unwrap();
        assert!(NoteVerifier::parse(&other).unwrap().open(&note).is_err());
        // A key whose hash was edited is refused.
        assert!(NoteVerifier::parse(&vkey.replacen('+', "+0", 1)).is_err());
        assert!(signer.sign("no newline").is_err());
    }
}
