//! `[audit]` in `tally.toml`: the log's origin and the checkpoint signing key.

use std::path::PathBuf;

use serde::Deserialize;
use tally_domain::Secret;

use crate::note::{NoteError, NoteSigner, NoteVerifier};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log's name, the first line of every checkpoint, and the key's name.
    pub origin: String,
    /// The Ed25519 signing key in Go's note format (`PRIVATE+KEY+NAME+HASH+KEY`, `tally audit keygen`). Unset: the
    /// key in `key_file`, created there on first use (a local default; production sets this from its secrets).
    pub signing_key: Option<Secret<String>>,
    pub key_file: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: "tally.local/audit".into(),
            signing_key: None,
            key_file: PathBuf::from(".tally/audit/signing.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit signing key: {0}")]
    Note(#[from] NoteError),
    #[error("audit signing key {0}: {1}")]
    Io(String, std::io::Error),
}

impl AuditConfig {
    /// The verifier key of the configured signer, if there is one — never creating a key (a verifier that made
    /// its own key would check nothing).
    pub fn verifier(&self) -> Result<Option<NoteVerifier>, KeyError> {
        let io = |e| KeyError::Io(self.key_file.display().to_string(), e);
        let signer = match &self.signing_key {
            Some(key) => Some(NoteSigner::parse(key.expose())?),
            None if self.key_file.exists() => {
                Some(NoteSigner::parse(&std::fs::read_to_string(&self.key_file).map_err(io)?)?)
            }
            None => None,
        };
        Ok(match signer {
            Some(s) => Some(NoteVerifier::parse(&s.verifier_key())?),
            None => None,
        })
    }

    /// The signer: the configured key, else the key file's, else a new key written to the key file (mode 0600,
    /// with its verifier key beside it as `KEY_FILE.pub`). Returns whether it was created.
    pub fn signer(&self) -> Result<(NoteSigner, bool), KeyError> {
        if let Some(key) = &self.signing_key {
            return Ok((NoteSigner::parse(key.expose())?, false));
        }
        let io = |e| KeyError::Io(self.key_file.display().to_string(), e);
        if self.key_file.exists() {
            return Ok((NoteSigner::parse(&std::fs::read_to_string(&self.key_file).map_err(io)?)?, false));
        }
        let (skey, vkey) = NoteSigner::generate(&self.origin, NoteSigner::random_seed().map_err(io)?)?;
        if let Some(dir) = self.key_file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.key_file)
                .map_err(io)?;
            f.write_all(format!("{skey}\n").as_bytes()).map_err(io)?;
        }
        let mut public = self.key_file.clone().into_os_string();
        public.push(".pub");
        std::fs::write(&public, format!("{vkey}\n")).map_err(io)?;
        Ok((NoteSigner::parse(&skey)?, true))
    }
}
