//! The audit log against a real PostgreSQL, and its export against an independent checker: Go's
//! golang.org/x/mod/sumdb packages (Debian's golang-golang-x-mod-dev, installed by scripts/install-deps.sh).

use std::path::Path;
use std::process::Command;

use tally_audit::store::{self, AuditError};
use tally_audit::{Entry, NoteSigner, NoteVerifier};

const ORIGIN: &str = "tally.test/audit";

fn keys() -> (NoteSigner, NoteVerifier) {
    let (skey, vkey) = NoteSigner::generate("tally.test", [42u8; 32]).unwrap();
    (NoteSigner::parse(&skey).unwrap(), NoteVerifier::parse(&vkey).unwrap())
}

fn entry(i: usize) -> Entry {
    Entry {
        actor: if i.is_multiple_of(2) { "ana".into() } else { "bob".into() },
        action: "recon.break.resolve".into(),
        subject: Some(format!("break:b{i}")),
        reason: Some(format!("reason {i}")),
        ticket: Some(format!("FIN-{i}")),
        ..Entry::default()
    }
}

async fn append(pool: &deadpool_postgres::Pool, e: &Entry, commit: bool) -> u64 {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let seq = store::append(&tx, e).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    seq
}

#[tokio::test]
async fn records_commit_with_their_action_checkpoints_sign_the_tree_and_verify_finds_any_rewrite() {
    let (_, pool) = tally_testkit::database("audit_log").await;
    let (signer, verifier) = keys();
    assert_eq!(append(&pool, &entry(0), true).await, 0);
    // A record whose transaction rolls back leaves no trace and no gap.
    assert_eq!(append(&pool, &entry(99), false).await, 1);
    for i in 1..5 {
        assert_eq!(append(&pool, &entry(i), true).await, i as u64);
    }
    let unsigned = store::verify(&pool, &verifier, ORIGIN).await.unwrap();
    assert!(!unsigned.is_clean(), "no checkpoint yet");
    let (cp, _) = store::checkpoint(&pool, &signer, ORIGIN).await.unwrap();
    assert_eq!(cp.size, 5);
    for i in 5..9 {
        append(&pool, &entry(i), true).await;
    }
    let report = store::verify(&pool, &verifier, ORIGIN).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.records, report.checkpoints, report.unsigned), (9, 1, 4));
    store::checkpoint(&pool, &signer, ORIGIN).await.unwrap();
    // Inclusion: a record newer than every checkpoint cannot be proved yet; one in it can.
    let proof = store::prove(&pool, 7, &verifier).await.unwrap();
    assert_eq!(proof.size, 9);
    assert!(proof.record.contains("\"subject\":\"break:b7\""));
    assert!(matches!(store::prove(&pool, 9, &verifier).await, Err(AuditError::NoSuchRecord(9))));

    // The database refuses changes; with its triggers switched off (an administrator), a rewrite is still found.
    let client = pool.get().await.unwrap();
    for sql in ["UPDATE audit_log SET actor = 'eve'", "DELETE FROM audit_log WHERE seq = 8", "TRUNCATE audit_log"] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
    let err = client
        .execute("INSERT INTO audit_log (seq, record, leaf_hash, action, actor) VALUES (20, 'x', sha256('\\x0078'::bytea), 'a', 'b')", &[])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("the next is 9"), "{err:?}");
    client
        .batch_execute(
            "ALTER TABLE audit_log DISABLE TRIGGER USER;
             UPDATE audit_log SET record = r.n, leaf_hash = sha256('\\x00'::bytea || r.n)
               FROM (SELECT seq, convert_to(replace(convert_from(record, 'UTF8'), 'reason 3', 'reason 4'), 'UTF8') AS n
                       FROM audit_log WHERE seq = 3) AS r
              WHERE audit_log.seq = r.seq;
             ALTER TABLE audit_log ENABLE TRIGGER USER;",
        )
        .await
        .unwrap();
    let report = store::verify(&pool, &verifier, ORIGIN).await.unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems.iter().all(|p| p.contains("changed, dropped or reordered")), "{:?}", report.problems);
    // A checkpoint signed by another key does not verify.
    let (_, other) = NoteSigner::generate("tally.test", [1u8; 32]).unwrap();
    let report = store::verify(&pool, &NoteVerifier::parse(&other).unwrap(), ORIGIN).await.unwrap();
    assert!(report.problems.iter().any(|p| p.contains("no signature by tally.test")), "{:?}", report.problems);
}

fn go_verify(dir: &Path) -> (bool, String) {
    let go = Command::new("go")
        .args(["run", "verify.go", "."])
        .current_dir(dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .output()
        .expect("Go (Debian golang-go golang-golang-x-mod-dev) runs the independent check: scripts/install-deps.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&go.stdout), String::from_utf8_lossy(&go.stderr));
    (go.status.success(), text)
}

#[tokio::test]
async fn an_export_verifies_with_gos_sumdb_packages_and_an_edited_dropped_or_reordered_record_does_not() {
    let (_, pool) = tally_testkit::database("audit_export").await;
    let (signer, verifier) = keys();
    for i in 0..6 {
        append(&pool, &entry(i), true).await;
    }
    store::checkpoint(&pool, &signer, ORIGIN).await.unwrap();
    for i in 6..11 {
        append(&pool, &entry(i), true).await;
    }
    store::checkpoint(&pool, &signer, ORIGIN).await.unwrap();
    let dir = std::env::temp_dir().join(format!("tally-audit-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exported = store::export(&pool, &dir, &verifier).await.unwrap();
    assert_eq!((exported.size, exported.previous), (11, Some(6)));
    let (ok, out) = go_verify(&dir);
    assert!(ok, "{out}");
    assert!(out.contains("11 records") && out.contains("size 6 is a prefix of size 11"), "{out}");

    let copy = |name: &str| {
        let to = dir.with_extension(name);
        let _ = std::fs::remove_dir_all(&to);
        let status = Command::new("cp").arg("-r").arg(&dir).arg(&to).status().unwrap();
        assert!(status.success());
        to
    };
    // One byte of one record.
    let edited = copy("edited");
    let path = edited.join("records/00000004");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|b| *b == b'4').unwrap();
    bytes[at] = b'5';
    std::fs::write(&path, bytes).unwrap();
    let (ok, out) = go_verify(&edited);
    assert!(!ok && out.contains("FAIL"), "{out}");
    // One record dropped (the last, so that the names still run on).
    let dropped = copy("dropped");
    std::fs::remove_file(dropped.join("records/00000010")).unwrap();
    let (ok, out) = go_verify(&dropped);
    assert!(!ok && out.contains("the checkpoint signs 11 records, the export has 10"), "{out}");
    // Two records swapped.
    let swapped = copy("swapped");
    let (a, b) = (swapped.join("records/00000002"), swapped.join("records/00000007"));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bb).unwrap();
    std::fs::write(&b, ba).unwrap();
    let (ok, out) = go_verify(&swapped);
    assert!(!ok && out.contains("FAIL"), "{out}");
    // The signature: another key's checkpoint.
    let forged = copy("forged");
    let (skey, _) = NoteSigner::generate("tally.test", [5u8; 32]).unwrap();
    let other = NoteSigner::parse(&skey).unwrap();
    let text = verifier.open(&std::fs::read_to_string(dir.join("checkpoint")).unwrap()).unwrap().to_owned();
    std::fs::write(forged.join("checkpoint"), other.sign(&text).unwrap()).unwrap();
    let (ok, out) = go_verify(&forged);
    assert!(!ok && out.contains("checkpoint"), "{out}");
    for d in [dir, edited, dropped, swapped, forged] {
        let _ = std::fs::remove_dir_all(d);
    }
}
