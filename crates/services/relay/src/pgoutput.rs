//! PostgreSQL's logical replication protocol as the `pgoutput` plugin writes it (protocol version 1; PostgreSQL
//! docs, "Logical Replication Message Formats"): the messages a publication's changes decode to. Pure: bytes in,
//! messages out; every malformed input is an error naming what was cut short, never a guess.

use std::collections::HashMap;

/// An LSN (a byte position in the WAL).
pub type Lsn = u64;

/// `X/Y` as PostgreSQL prints an LSN.
pub fn lsn_text(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The value of `X/Y`.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
    Relation(Relation),
    /// A row inserted into the relation `relation`: its columns as text (`None`: NULL).
    Insert {
        relation: u32,
        columns: Vec<Option<String>>,
    },
    /// Updates, deletes, truncates, origins, types and logical messages: not read by the relay (the outbox is
    /// append-only; upstream CDC tables get inserts and updates in a later step).
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message cut short reading {0}")]
    Short(&'static str),
    #[error("pgoutput: an empty message")]
    Empty,
    #[error("pgoutput: {0} is not UTF-8")]
    Utf8(&'static str),
    #[error("pgoutput: tuple column kind {0:?} is unknown")]
    ColumnKind(char),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Short(what));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self.b.iter().position(|&c| c == 0).ok_or(DecodeError::Short(what))?;
        let s = std::str::from_utf8(&self.b[..end]).map_err(|_| DecodeError::Utf8(what))?.to_owned();
        self.b = &self.b[end + 1..];
        Ok(s)
    }
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader { b: rest };
    Ok(match tag {
        b'B' => {
            let final_lsn = r.u64("Begin final LSN")?;
            let _commit_ts = r.u64("Begin timestamp")?;
            Message::Begin { final_lsn, xid: r.u32("Begin xid")? }
        }
        b'C' => {
            let _flags = r.u8("Commit flags")?;
            let commit_lsn = r.u64("Commit LSN")?;
            let end_lsn = r.u64("Commit end LSN")?;
            let _ts = r.u64("Commit timestamp")?;
            Message::Commit { commit_lsn, end_lsn }
        }
        b'R' => {
            let id = r.u32("Relation id")?;
            let namespace = r.cstr("Relation namespace")?;
            let name = r.cstr("Relation name")?;
            let _identity = r.u8("Relation replica identity")?;
            let n = r.u16("Relation column count")?;
            let mut columns = Vec::with_capacity(n.into());
            for _ in 0..n {
                let _flags = r.u8("column flags")?;
                columns.push(r.cstr("column name")?);
                let _type = r.u32("column type")?;
                let _typmod = r.u32("column type modifier")?;
            }
            Message::Relation(Relation { id, namespace, name, columns })
        }
        b'I' => {
            let relation = r.u32("Insert relation id")?;
            let _new = r.u8("Insert tuple marker")?;
            Message::Insert { relation, columns: tuple(&mut r)? }
        }
        other => Message::Other(other),
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Vec<Option<String>>, DecodeError> {
    let n = r.u16("tuple column count")?;
    let mut out = Vec::with_capacity(n.into());
    for _ in 0..n {
        match r.u8("tuple column kind")? {
            b'n' | b'u' => out.push(None),
            b't' => {
                let len = r.u32("text column length")? as usize;
                let v = r.take(len, "text column")?;
                out.push(Some(std::str::from_utf8(v).map_err(|_| DecodeError::Utf8("text column"))?.to_owned()));
            }
            other => return Err(DecodeError::ColumnKind(other as char)),
        }
    }
    Ok(out)
}

/// The relations seen so far in a stream (each is sent before its first change, and again when it changes).
#[derive(Debug, Default)]
pub struct Relations(HashMap<u32, Relation>);

impl Relations {
    pub fn learn(&mut self, r: Relation) {
        self.0.insert(r.id, r);
    }

    pub fn get(&self, id: u32) -> Option<&Relation> {
        self.0.get(&id)
    }
}

/// A `bytea` column in text output (`\x` and hex).
pub fn bytea(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.strip_prefix("\\x")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16_385u32.to_be_bytes());
        m.extend(b"public\0api_payment_outbox\0");
        m.push(b'd');
        m.extend(2u16.to_be_bytes());
        for name in ["outbox_id", "record_value"] {
            m.push(1);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(20u32.to_be_bytes());
            m.extend(u32::MAX.to_be_bytes());
        }
        m
    }

    #[test]
    fn a_relation_an_insert_and_a_commit_decode_as_postgres_writes_them() {
        let Message::Relation(r) = decode(&relation()).expect("relation") else { panic!("a relation") };
        assert_eq!((r.id, r.namespace.as_str(), r.name.as_str()), (16_385, "public", "api_payment_outbox"));
        assert_eq!(r.columns, ["outbox_id", "record_value"]);
        let mut insert = vec![b'I'];
        insert.extend(16_385u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(2u16.to_be_bytes());
        insert.push(b't');
        insert.extend(2u32.to_be_bytes());
        insert.extend(b"42");
        insert.push(b'n');
        assert_eq!(
            decode(&insert).expect("insert"),
            Message::Insert { relation: 16_385, columns: vec![Some("42".into()), None] }
        );
        let mut commit = vec![b'C', 0];
        commit.extend(0x1_0000_0010u64.to_be_bytes());
        commit.extend(0x1_0000_0040u64.to_be_bytes());
        commit.extend(0u64.to_be_bytes());
        assert_eq!(
            decode(&commit).expect("commit"),
            Message::Commit { commit_lsn: 0x1_0000_0010, end_lsn: 0x1_0000_0040 }
        );
        assert_eq!(lsn_text(0x1_0000_0040), "1/40");
        assert_eq!(parse_lsn("1/40"), Some(0x1_0000_0040));
        assert_eq!(bytea("\\x00ff"), Some(vec![0, 255]));
    }

    #[test]
    fn every_cut_short_message_is_an_error_never_a_partial_message() {
        let r = relation();
        for n in 1..r.len() {
            assert!(decode(&r[..n]).is_err(), "a relation cut at {n} bytes");
        }
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(decode(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'x']), Err(DecodeError::ColumnKind('x'))));
    }
}
