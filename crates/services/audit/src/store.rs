//! The audit log in PostgreSQL (migration 0016): records appended in the caller's transaction, signed
//! checkpoints, and the checks an auditor's tool makes, made here too.

use deadpool_postgres::Pool;

use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
use crate::record::{Entry, Record};

/// The advisory lock every appender holds until its commit: one writer at a time, so the sequence has no gaps.
const LOCK: i64 = 0x7a11_0a0d;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("no audit record {0}")]
    NoSuchRecord(u64),
    #[error("no signed checkpoint yet (`tally audit checkpoint`)")]
    NoCheckpoint,
    #[error("the log does not verify: {0}")]
    Broken(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl From<deadpool_postgres::PoolError> for AuditError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AuditError::Pool(e.to_string())
    }
}

/// Appends a record in `tx` (committed or rolled back with what it records); returns its sequence number.
pub async fn append(tx: &tokio_postgres::Transaction<'_>, entry: &Entry) -> Result<u64, tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(seq) + 1, 0),
                    to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
               FROM audit_log",
            &[],
        )
        .await?;
    let (seq, at): (i64, String) = (row.get(0), row.get(1));
    let record = Record::new(seq as u64, at, entry).canonical();
    tx.execute(
        "INSERT INTO audit_log (seq, record, leaf_hash, action, actor, subject) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&seq, &record, &merkle::leaf_hash(&record).as_slice(), &entry.action, &entry.actor, &entry.subject],
    )
    .await?;
    Ok(seq as u64)
}

/// A stored record: its bytes and the leaf hash stored with them.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub record: Vec<u8>,
    pub leaf: Vec<u8>,
}

pub async fn records(pool: &Pool) -> Result<Vec<Stored>, AuditError> {
    let client = pool.get().await?;
    Ok(client
        .query("SELECT seq, record, leaf_hash FROM audit_log ORDER BY seq", &[])
        .await?
        .iter()
        .map(|r| Stored { seq: r.get::<_, i64>(0) as u64, record: r.get(1), leaf: r.get(2) })
        .collect())
}

/// The leaves, recomputed from the records' bytes (never taken from the stored hashes).
fn leaves(records: &[Stored]) -> Vec<Hash> {
    records.iter().map(|r| merkle::leaf_hash(&r.record)).collect()
}

/// Signs the current tree head and stores it (a checkpoint of an unchanged size is the stored one).
pub async fn checkpoint(pool: &Pool, signer: &NoteSigner, origin: &str) -> Result<(Checkpoint, String), AuditError> {
    let all = records(pool).await?;
    let report = check_records(&all);
    if let Some(p) = report.first() {
        return Err(AuditError::Broken(p.clone()));
    }
    let cp = Checkpoint { origin: origin.to_owned(), size: all.len() as u64, root: merkle::tree_hash(&leaves(&all)) };
    let note = signer.sign(&cp.body())?;
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO audit_checkpoints (size, root, note) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING",
            &[&(cp.size as i64), &cp.root.as_slice(), &note],
        )
        .await?;
    let stored: String =
        client.query_one("SELECT note FROM audit_checkpoints WHERE size = $1", &[&(cp.size as i64)]).await?.get(0);
    Ok((cp, stored))
}

/// The stored checkpoints, smallest first: (size, note).
pub async fn checkpoints(pool: &Pool) -> Result<Vec<(u64, String)>, AuditError> {
    let client = pool.get().await?;
    Ok(client
        .query("SELECT size, note FROM audit_checkpoints ORDER BY size", &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
        .collect())
}

/// Problems with the records themselves: a gap in the sequence, bytes that are not a canonical record of their
/// position, a stored leaf hash that is not the bytes'.
fn check_records(all: &[Stored]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, r) in all.iter().enumerate() {
        if r.seq != i as u64 {
            problems.push(format!("record {} where {i} belongs: the sequence has a gap", r.seq));
            break;
        }
        match Record::parse(&r.record) {
            Ok(rec) if rec.seq == r.seq => {}
            Ok(rec) => problems.push(format!("record {} states position {}", r.seq, rec.seq)),
            Err(e) => problems.push(format!("record {}: {e}", r.seq)),
        }
        if r.leaf != merkle::leaf_hash(&r.record) {
            problems.push(format!("record {}: its stored leaf hash is not its bytes'", r.seq));
        }
    }
    problems
}

/// What `tally audit verify` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    /// The newest checkpoint's size and root (hex).
    pub checkpoint_size: Option<u64>,
    pub root: Option<String>,
    /// Records appended since the newest checkpoint (not yet covered by a signature).
    pub unsigned: u64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.checkpoint_size.is_some()
    }
}

/// The whole log against every checkpoint ever signed: each signature verifies with `verifier`, names `origin`,
/// and its root is the tree hash of the first `size` records as they are now — so no record was changed, dropped
/// or reordered since it was signed, and every checkpoint is a prefix of the log.
pub async fn verify(pool: &Pool, verifier: &NoteVerifier, origin: &str) -> Result<VerifyReport, AuditError> {
    let all = records(pool).await?;
    let mut report =
        VerifyReport { records: all.len() as u64, problems: check_records(&all), ..VerifyReport::default() };
    let leaves = leaves(&all);
    let tree = merkle::Tree::new(&leaves);
    let checkpoints = checkpoints(pool).await?;
    report.checkpoints = checkpoints.len() as u64;
    for (size, note) in &checkpoints {
        let cp = match verifier.open(note).map_err(AuditError::from).and_then(|t| Ok(Checkpoint::parse(t)?)) {
            Ok(cp) => cp,
            Err(e) => {
                report.problems.push(format!("checkpoint {size}: {e}"));
                continue;
            }
        };
        if cp.size != *size || cp.origin != origin {
            report.problems.push(format!("checkpoint {size}: signs size {} of origin {:?}", cp.size, cp.origin));
        } else if cp.size > leaves.len() as u64 {
            report.problems.push(format!("checkpoint {size}: the log has only {} records", leaves.len()));
        } else if tree.root(cp.size as usize) != Some(cp.root) {
            report.problems.push(format!(
                "checkpoint {size}: its root is not the tree hash of the first {size} records (changed, dropped or \
                 reordered since it was signed)"
            ));
        }
        report.checkpoint_size = Some(cp.size);
        report.root = Some(hex::encode(cp.root));
    }
    report.unsigned = report.records - report.checkpoint_size.unwrap_or(0).min(report.records);
    Ok(report)
}

/// The proof that record `seq` is in the log as of the newest checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InclusionProof {
    pub seq: u64,
    /// The record's canonical bytes, as text.
    pub record: String,
    pub leaf_hash: String,
    pub checkpoint: String,
    pub size: u64,
    pub root: String,
    /// The RFC 6962 audit path, base64, leaf to root.
    pub path: Vec<String>,
}

pub async fn prove(pool: &Pool, seq: u64, verifier: &NoteVerifier) -> Result<InclusionProof, AuditError> {
    use base64::Engine;
    let all = records(pool).await?;
    let (size, note) = checkpoints(pool).await?.pop().ok_or(AuditError::NoCheckpoint)?;
    if seq >= size {
        return Err(if seq < all.len() as u64 {
            AuditError::Broken(format!("record {seq} is newer than the newest checkpoint ({size}): sign one first"))
        } else {
            AuditError::NoSuchRecord(seq)
        });
    }
    let (cp, leaves, tree) = signed_tree(&all, &note, verifier)?;
    let path = tree.inclusion_proof(seq as usize).ok_or(AuditError::NoSuchRecord(seq))?;
    if !merkle::verify_inclusion(seq, size, &leaves[seq as usize], &path, &cp.root) {
        return Err(AuditError::Broken(format!("record {seq} does not prove into checkpoint {size}")));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(InclusionProof {
        seq,
        record: String::from_utf8_lossy(&all[seq as usize].record).into_owned(),
        leaf_hash: b64.encode(leaves[seq as usize]),
        checkpoint: note,
        size,
        root: b64.encode(cp.root),
        path: path.iter().map(|h| b64.encode(h)).collect(),
    })
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub records: u64,
    pub size: u64,
    pub previous: Option<u64>,
}

/// The bundle an auditor checks without Tally: `records/NNNNNNNN` (each record's exact bytes), `checkpoint` (the
/// newest signed note), `checkpoint.previous` with `consistency` (the proof from it to the newest), `proofs/NNNNNNNN`
/// (each record's inclusion proof, base64 hashes one per line), `key.pub` (the verifier key), `verify.go` (a
/// checker over Go's x/mod sumdb packages) and `README`.
pub async fn export(pool: &Pool, dir: &std::path::Path, verifier: &NoteVerifier) -> Result<Exported, AuditError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let io = |what: &std::path::Path| {
        let what = what.display().to_string();
        move |e| AuditError::Io(what.clone(), e)
    };
    let all = records(pool).await?;
    let cps = checkpoints(pool).await?;
    let (size, note) = cps.last().cloned().ok_or(AuditError::NoCheckpoint)?;
    if size == 0 {
        return Err(AuditError::Broken("the newest checkpoint signs an empty log: nothing to export".into()));
    }
    let (_, leaves, tree) = signed_tree(&all, &note, verifier)?;
    for sub in ["records", "proofs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
    }
    let write = |path: std::path::PathBuf, bytes: &[u8]| std::fs::write(&path, bytes).map_err(io(&path));
    for (i, r) in all[..leaves.len()].iter().enumerate() {
        write(dir.join("records").join(format!("{i:08}")), &r.record)?;
        let path = tree.inclusion_proof(i).expect("in range");
        let text: String = path.iter().map(|h| format!("{}\n", b64.encode(h))).collect();
        write(dir.join("proofs").join(format!("{i:08}")), text.as_bytes())?;
    }
    write(dir.join("checkpoint"), note.as_bytes())?;
    // The newest earlier head that signs records (an empty tree's head proves nothing, and Go's CheckTree takes
    // none).
    let previous = cps.iter().rev().skip(1).find(|(s, _)| *s > 0 && *s < size).cloned();
    if let Some((psize, pnote)) = &previous {
        write(dir.join("checkpoint.previous"), pnote.as_bytes())?;
        let proof = merkle::consistency_proof(*psize as usize, &leaves).expect("a smaller checkpoint");
        let text: String = proof.iter().map(|h| format!("{}\n", b64.encode(h))).collect();
        write(dir.join("consistency"), text.as_bytes())?;
    }
    write(dir.join("key.pub"), format!("{}\n", verifier.text()).as_bytes())?;
    write(dir.join("verify.go"), VERIFY_GO.as_bytes())?;
    write(dir.join("README"), README.as_bytes())?;
    Ok(Exported { records: size, size, previous: previous.map(|(s, _)| s) })
}

/// A signed checkpoint opened with `verifier`, and the tree of the records it signs: refused unless the log holds
/// that many records and they, as they are, hash to its root.
fn signed_tree(
    all: &[Stored],
    note: &str,
    verifier: &NoteVerifier,
) -> Result<(Checkpoint, Vec<Hash>, merkle::Tree), AuditError> {
    let cp = Checkpoint::parse(verifier.open(note)?)?;
    if cp.size as usize > all.len() {
        return Err(AuditError::Broken(format!("checkpoint {} is larger than the log ({})", cp.size, all.len())));
    }
    let leaves = leaves(&all[..cp.size as usize]);
    let tree = merkle::Tree::new(&leaves);
    if tree.root(leaves.len()) != Some(cp.root) {
        return Err(AuditError::Broken(format!("checkpoint {} does not match the log", cp.size)));
    }
    Ok((cp, leaves, tree))
}

/// The independent checker shipped with every export (also `tools/audit/verify.go`).
pub const VERIFY_GO: &str = include_str!("../../../../tools/audit/verify.go");

const README: &str = "Tally audit log export (RFC 6962 Merkle tree, C2SP tlog-checkpoint, Ed25519 signed note).\n\
\n\
records/NNNNNNNN   each record's canonical bytes (compact JSON), leaf NNNNNNNN of the tree\n\
checkpoint         the signed tree head: origin, size, base64 root hash, then the signature\n\
proofs/NNNNNNNN    the inclusion proof of record NNNNNNNN in that tree (base64 hashes, leaf to root)\n\
checkpoint.previous, consistency   the previous signed head and the proof that it is a prefix of this one\n\
key.pub            the verifier key (Go's note format: name+hash+base64 key)\n\
\n\
Check it with Go's golang.org/x/mod/sumdb/{note,tlog} (Debian: golang-go golang-golang-x-mod-dev):\n\
  GO111MODULE=off GOPATH=/usr/share/gocode go run verify.go .\n\
It recomputes the root from the records, checks the signature, every inclusion proof and the consistency proof.\n";
