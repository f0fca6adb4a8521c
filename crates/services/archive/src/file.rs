//! One archive file: the records of one topic-partition offset range, as Parquet. Deterministic: the same records
//! give the same bytes (no wall-clock time, no host name, fixed writer settings), so a retried write of the same range
//! produces the same name and the same object.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::reader::get_typed_column_reader;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sha2::{Digest, Sha256};
use tally_contracts::{decode_payment_event, decode_raw_delivery, unframe};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::checksum::{FactMoney, RangeSum};

/// The file schema. Lineage first (where the record sits in the log), then the record as the broker holds it, then
/// the columns decoded from it where its schema is known (null otherwise). Timestamps are UTC.
const SCHEMA: &str = "
message tally_archive_record {
    required binary topic (STRING);
    required int32 partition;
    required int64 offset;
    optional int64 timestamp (TIMESTAMP(MILLIS,true));
    optional binary key;
    optional binary value;
    optional group headers (LIST) {
        repeated group list {
            required group element {
                required binary key (STRING);
                optional binary value;
            }
        }
    }
    optional int32 schema_id;
    optional int64 received_at (TIMESTAMP(MICROS,true));
    optional binary delivery_id (STRING);
    optional binary psp (STRING);
    optional binary fact_key (STRING);
    optional binary kind (STRING);
    optional binary payment_id (STRING);
    optional binary merchant_id (STRING);
    optional int64 amount_minor;
    optional binary currency (STRING);
    optional int64 occurred_at (TIMESTAMP(MICROS,true));
    optional binary source_event_id (STRING);
    optional binary verdict (STRING);
    optional int64 fee_minor;
}";

/// The writer's name in the file footer: fixed, so that bytes do not depend on the build.
const CREATED_BY: &str = "tally-archive (parquet-rs)";

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("archive file: {0}")]
    Invalid(String),
}

/// A record as consumed from the log (the sink framework's).
pub use tally_sink::LogRecord;

/// What the value says, where its schema is known.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DecodedColumns {
    schema_id: Option<i32>,
    received_at: Option<i64>,
    delivery_id: Option<String>,
    psp: Option<String>,
    fact_key: Option<Uuid>,
    kind: Option<String>,
    payment_id: Option<String>,
    merchant_id: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    occurred_at: Option<i64>,
    source_event_id: Option<String>,
    verdict: Option<String>,
    fee_minor: Option<i64>,
}

impl DecodedColumns {
    /// The fact and its money, for the range checksum.
    fn fact_money(&self) -> Option<(Uuid, FactMoney)> {
        Some((
            self.fact_key?,
            FactMoney { amount_minor: self.amount_minor?, fee_minor: self.fee_minor, currency: self.currency.clone()? },
        ))
    }
}

fn decode(value: Option<&[u8]>) -> DecodedColumns {
    let Some(value) = value else { return DecodedColumns::default() };
    let Ok((schema_id, _)) = unframe(value) else { return DecodedColumns::default() };
    let mut d = DecodedColumns { schema_id: i32::try_from(schema_id).ok(), ..Default::default() };
    if let Ok(f) = decode_payment_event(value) {
        let e = &f.event;
        d.received_at = Some(e.received_at.unix_micros());
        d.delivery_id = f.delivery_id.clone();
        d.psp = Some(e.psp.as_str().to_owned());
        d.fact_key = Some(f.fact_key.0);
        d.kind = Some(e.kind.as_str().to_owned());
        d.payment_id = Some(e.payment_id.clone());
        d.merchant_id = Some(e.merchant_id.clone());
        d.amount_minor = Some(e.money.amount.minor());
        d.currency = Some(e.money.currency.code().to_owned());
        d.occurred_at = Some(e.occurred_at.unix_micros());
        d.source_event_id = Some(e.source_event_id.clone());
        d.fee_minor = e.fee.map(|f| f.minor());
    } else if let Ok(r) = decode_raw_delivery(value) {
        d.received_at = Some(r.received_at.unix_micros());
        d.delivery_id = Some(r.delivery_id);
        d.psp = Some(r.psp);
        d.verdict = Some(r.verdict.as_str().to_owned());
    }
    d
}

/// An encoded file and what the manifest says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFile {
    pub path: String,
    pub bytes: Bytes,
    pub sha256: String,
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    /// Exclusive.
    pub end_offset: i64,
    pub sum: RangeSum,
    pub first_timestamp_ms: Option<i64>,
    pub last_timestamp_ms: Option<i64>,
}

/// The object path of a range: `topic=T/date=YYYY-MM-DD/hour=HH/T-PPP-START-END.parquet`, where date and hour are
/// those of the range's first record (UTC), and START/END (exclusive) are zero-padded so names sort by offset.
pub fn object_path(topic: &str, partition: i32, start: i64, end: i64, first_timestamp_ms: Option<i64>) -> String {
    let at = first_timestamp_ms
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "topic={topic}/date={:04}-{:02}-{:02}/hour={:02}/{topic}-{partition:03}-{start:020}-{end:020}.parquet",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

/// Parses a name made by [`object_path`] back into (topic, partition, start, end).
pub fn parse_object_path(path: &str) -> Option<(String, i32, i64, i64)> {
    let topic = path.strip_prefix("topic=")?.split('/').next()?.to_owned();
    let name = path.rsplit('/').next()?.strip_suffix(".parquet")?;
    let rest = name.strip_prefix(&topic)?.strip_prefix('-')?;
    let mut parts = rest.split('-');
    let partition = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((topic, partition, start, end))
}

fn properties() -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_created_by(CREATED_BY.to_owned())
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_max_row_group_size(64 * 1024)
            .build(),
    )
}

fn opt_bytes(v: Option<&[u8]>, defs: &mut Vec<i16>, out: &mut Vec<ByteArray>) {
    match v {
        Some(b) => {
            defs.push(1);
            out.push(ByteArray::from(b.to_vec()));
        }
        None => defs.push(0),
    }
}

fn opt_i64(v: Option<i64>, defs: &mut Vec<i16>, out: &mut Vec<i64>) {
    match v {
        Some(x) => {
            defs.push(1);
            out.push(x);
        }
        None => defs.push(0),
    }
}

/// Encodes the records of one topic-partition, contiguous and in offset order, as one file.
pub fn encode(records: &[LogRecord]) -> Result<EncodedFile, FileError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(FileError::Invalid("an archive file needs at least one record".into()));
    };
    for pair in records.windows(2) {
        if pair[1].topic != first.topic || pair[1].partition != first.partition || pair[1].offset <= pair[0].offset {
            return Err(FileError::Invalid(format!(
                "records of one file must be one topic-partition in offset order ({}[{}]@{} then {}[{}]@{})",
                pair[0].topic, pair[0].partition, pair[0].offset, pair[1].topic, pair[1].partition, pair[1].offset
            )));
        }
    }
    let decoded: Vec<DecodedColumns> = records.iter().map(|r| decode(r.value.as_deref())).collect();
    let mut sum = RangeSum::default();
    for (r, d) in records.iter().zip(&decoded) {
        let fact = d.fact_money();
        sum.add(r.offset, fact.as_ref().map(|(k, m)| (*k, m)));
    }

    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties())?;
    for (chunk, decoded) in records.chunks(64 * 1024).zip(decoded.chunks(64 * 1024)) {
        let mut rg = writer.next_row_group()?;
        let mut column = 0usize;
        while let Some(mut col) = rg.next_column()? {
            write_column(column, chunk, decoded, &mut col)?;
            col.close()?;
            column += 1;
        }
        rg.close()?;
    }
    let bytes = Bytes::from(writer.into_inner()?);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let first_timestamp_ms = records.iter().find_map(|r| r.timestamp_ms);
    let last_timestamp_ms = records.iter().rev().find_map(|r| r.timestamp_ms);
    let end_offset = last.offset + 1;
    Ok(EncodedFile {
        path: object_path(&first.topic, first.partition, first.offset, end_offset, first_timestamp_ms),
        bytes,
        sha256,
        topic: first.topic.clone(),
        partition: first.partition,
        start_offset: first.offset,
        end_offset,
        sum,
        first_timestamp_ms,
        last_timestamp_ms,
    })
}

/// Writes leaf column number `column` (schema order) of one row group.
fn write_column(
    column: usize,
    records: &[LogRecord],
    decoded: &[DecodedColumns],
    col: &mut parquet::file::writer::SerializedColumnWriter<'_>,
) -> Result<(), FileError> {
    let n = records.len();
    let mut defs: Vec<i16> = Vec::with_capacity(n);
    let strs = |f: &dyn Fn(&DecodedColumns) -> Option<&str>, defs: &mut Vec<i16>| {
        let mut out = Vec::with_capacity(n);
        for d in decoded {
            opt_bytes(f(d).map(str::as_bytes), defs, &mut out);
        }
        out
    };
    let ints = |f: &dyn Fn(&DecodedColumns) -> Option<i64>, defs: &mut Vec<i16>| {
        let mut out = Vec::with_capacity(n);
        for d in decoded {
            opt_i64(f(d), defs, &mut out);
        }
        out
    };
    match column {
        0 => {
            let v: Vec<ByteArray> = records.iter().map(|r| ByteArray::from(r.topic.as_bytes().to_vec())).collect();
            col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
        }
        1 => {
            let v: Vec<i32> = records.iter().map(|r| r.partition).collect();
            col.typed::<Int32Type>().write_batch(&v, None, None)?;
        }
        2 => {
            let v: Vec<i64> = records.iter().map(|r| r.offset).collect();
            col.typed::<Int64Type>().write_batch(&v, None, None)?;
        }
        3 => {
            let mut v = Vec::with_capacity(n);
            for r in records {
                opt_i64(r.timestamp_ms, &mut defs, &mut v);
            }
            col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)?;
        }
        4 | 5 => {
            let mut v = Vec::with_capacity(n);
            for r in records {
                let field = if column == 4 { r.key.as_deref() } else { r.value.as_deref() };
                opt_bytes(field, &mut defs, &mut v);
            }
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        // headers.list.element.key (max definition level 2, repetition level 1) and .value (definition level 3). A
        // list of key/value pairs, not a map: Kafka allows a header key more than once.
        6 | 7 => {
            let mut reps: Vec<i16> = Vec::new();
            let mut v = Vec::new();
            for r in records {
                if r.headers.is_empty() {
                    // Present but empty: the list is defined (1), it has no entry.
                    defs.push(1);
                    reps.push(0);
                    continue;
                }
                for (i, (k, value)) in r.headers.iter().enumerate() {
                    reps.push(if i == 0 { 0 } else { 1 });
                    if column == 6 {
                        defs.push(2);
                        v.push(ByteArray::from(k.as_bytes().to_vec()));
                    } else if let Some(value) = value {
                        defs.push(3);
                        v.push(ByteArray::from(value.clone()));
                    } else {
                        defs.push(2);
                    }
                }
            }
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), Some(&reps))?;
        }
        8 => {
            let v = ints(&|d| d.schema_id.map(i64::from), &mut defs);
            let v: Vec<i32> = v.into_iter().map(|x| x as i32).collect();
            col.typed::<Int32Type>().write_batch(&v, Some(&defs), None)?;
        }
        9 => {
            let v = ints(&|d| d.received_at, &mut defs);
            col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)?;
        }
        10 => {
            let v = strs(&|d| d.delivery_id.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        11 => {
            let v = strs(&|d| d.psp.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        12 => {
            let keys: Vec<Option<String>> = decoded.iter().map(|d| d.fact_key.map(|k| k.to_string())).collect();
            let mut v = Vec::with_capacity(n);
            for k in &keys {
                opt_bytes(k.as_deref().map(str::as_bytes), &mut defs, &mut v);
            }
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        13 => {
            let v = strs(&|d| d.kind.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        14 => {
            let v = strs(&|d| d.payment_id.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        15 => {
            let v = strs(&|d| d.merchant_id.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        16 => {
            let v = ints(&|d| d.amount_minor, &mut defs);
            col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)?;
        }
        17 => {
            let v = strs(&|d| d.currency.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        18 => {
            let v = ints(&|d| d.occurred_at, &mut defs);
            col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)?;
        }
        19 => {
            let v = strs(&|d| d.source_event_id.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        20 => {
            let v = strs(&|d| d.verdict.as_deref(), &mut defs);
            col.typed::<ByteArrayType>().write_batch(&v, Some(&defs), None)?;
        }
        21 => {
            let v = ints(&|d| d.fee_minor, &mut defs);
            col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)?;
        }
        other => return Err(FileError::Invalid(format!("schema has an unexpected column {other}"))),
    }
    Ok(())
}

/// Reads back every record of a file as the log held it — lineage, timestamp, key, value and headers — for the
/// checks that compare the archive with the log byte for byte (and for replays from the archive).
pub fn read_records(bytes: Bytes) -> Result<Vec<LogRecord>, FileError> {
    use parquet::record::Field;
    let invalid = |what: &str, field: &Field| FileError::Invalid(format!("{what}: unexpected {field:?}"));
    let bytes_of = |field: &Field| -> Result<Option<Vec<u8>>, FileError> {
        match field {
            Field::Null => Ok(None),
            Field::Bytes(b) => Ok(Some(b.data().to_vec())),
            Field::Str(s) => Ok(Some(s.as_bytes().to_vec())),
            other => Err(invalid("bytes", other)),
        }
    };
    let reader = SerializedFileReader::new(bytes)?;
    let mut out = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let mut record = LogRecord {
            topic: String::new(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("topic", Field::Str(t)) => record.topic = t.clone(),
                ("partition", Field::Int(p)) => record.partition = *p,
                ("offset", Field::Long(o)) => record.offset = *o,
                ("timestamp", Field::TimestampMillis(t)) => record.timestamp_ms = Some(*t),
                ("timestamp", Field::Null) => {}
                ("key", f) => record.key = bytes_of(f)?,
                ("value", f) => record.value = bytes_of(f)?,
                ("headers", Field::Null) => {}
                ("headers", Field::ListInternal(list)) => {
                    for element in list.elements() {
                        let Field::Group(h) = element else { return Err(invalid("header", element)) };
                        let (mut key, mut value) = (String::new(), None);
                        for (n, f) in h.get_column_iter() {
                            match (n.as_str(), f) {
                                ("key", Field::Str(k)) => key = k.clone(),
                                ("value", f) => value = bytes_of(f)?,
                                (_, other) => return Err(invalid("header field", other)),
                            }
                        }
                        record.headers.push((key, value));
                    }
                }
                ("topic" | "partition" | "offset" | "timestamp" | "headers", other) => {
                    return Err(invalid(name, other))
                }
                _ => {}
            }
        }
        out.push(record);
    }
    Ok(out)
}

/// Leaf column indexes of the columns recon reads.
const OFFSET_COLUMN: usize = 2;
const FACT_KEY_COLUMN: usize = 12;
const AMOUNT_COLUMN: usize = 16;
const CURRENCY_COLUMN: usize = 17;
/// Files written before the fee column was added (migration 0007) have 21 leaf columns; their fees read as None.
const FEE_COLUMN: usize = 21;

/// What recon reads of one archived record: its offset and, for a fact, its key and money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFact {
    pub offset: i64,
    pub fact: Option<(Uuid, FactMoney)>,
}

/// One optional column of a row group, one entry per row.
fn optional_column<T: parquet::data_type::DataType>(
    rg: &dyn parquet::file::reader::RowGroupReader,
    column: usize,
    rows: usize,
) -> Result<Vec<Option<T::T>>, FileError> {
    let (mut defs, mut values): (Vec<i16>, Vec<T::T>) = (Vec::with_capacity(rows), Vec::new());
    get_typed_column_reader::<T>(rg.get_column_reader(column)?).read_records(
        rows,
        Some(&mut defs),
        None,
        &mut values,
    )?;
    if defs.len() != rows {
        return Err(FileError::Invalid(format!("column {column}: {} values for {rows} rows", defs.len())));
    }
    let mut values = values.into_iter();
    defs.into_iter()
        .map(|d| match d {
            0 => Ok(None),
            _ => values.next().map(Some).ok_or_else(|| FileError::Invalid(format!("column {column} is short"))),
        })
        .collect()
}

fn text(raw: &ByteArray) -> Result<&str, FileError> {
    std::str::from_utf8(raw.data()).map_err(|e| FileError::Invalid(e.to_string()))
}

/// Reads back the offset, and for facts the key and money, of every record of a file from its columns (not its
/// values): what recon compares with the ledger, offset by offset.
pub fn read_facts(bytes: Bytes) -> Result<Vec<ArchivedFact>, FileError> {
    let reader = SerializedFileReader::new(bytes)?;
    let has_fee = reader.metadata().file_metadata().schema_descr().num_columns() > FEE_COLUMN;
    let mut out = Vec::new();
    for i in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(i)?;
        let rows = usize::try_from(rg.metadata().num_rows()).unwrap_or(0);
        let mut offsets: Vec<i64> = Vec::with_capacity(rows);
        get_typed_column_reader::<Int64Type>(rg.get_column_reader(OFFSET_COLUMN)?).read_records(
            rows,
            None,
            None,
            &mut offsets,
        )?;
        if offsets.len() != rows {
            return Err(FileError::Invalid(format!("row group {i}: {} offsets, {rows} rows", offsets.len())));
        }
        let keys = optional_column::<ByteArrayType>(rg.as_ref(), FACT_KEY_COLUMN, rows)?;
        let amounts = optional_column::<Int64Type>(rg.as_ref(), AMOUNT_COLUMN, rows)?;
        let currencies = optional_column::<ByteArrayType>(rg.as_ref(), CURRENCY_COLUMN, rows)?;
        let fees =
            if has_fee { optional_column::<Int64Type>(rg.as_ref(), FEE_COLUMN, rows)? } else { vec![None; rows] };
        for (((offset, key), (amount, currency)), fee_minor) in
            offsets.into_iter().zip(keys).zip(amounts.into_iter().zip(currencies)).zip(fees)
        {
            let fact = match (key, amount, currency) {
                (Some(key), Some(amount_minor), Some(currency)) => Some((
                    Uuid::parse_str(text(&key)?).map_err(|e| FileError::Invalid(e.to_string()))?,
                    FactMoney { amount_minor, fee_minor, currency: text(&currency)?.to_owned() },
                )),
                (None, ..) => None,
                (Some(_), ..) => {
                    return Err(FileError::Invalid(format!("offset {offset}: a fact key without amount or currency")))
                }
            };
            out.push(ArchivedFact { offset, fact });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, value: Option<&[u8]>) -> LogRecord {
        LogRecord {
            topic: "payments.capture.v1".into(),
            partition: 2,
            offset,
            timestamp_ms: Some(1_763_700_000_000 + offset),
            key: Some(b"pi_1".to_vec()),
            value: value.map(<[u8]>::to_vec),
            headers: vec![("fact_key".into(), Some(b"x".to_vec())), ("empty".into(), None)],
        }
    }

    #[test]
    fn same_records_same_bytes_and_name() {
        let records: Vec<LogRecord> = (10..20).map(|o| record(o, Some(b"not avro"))).collect();
        let a = encode(&records).unwrap();
        let b = encode(&records).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.start_offset, 10);
        assert_eq!(a.end_offset, 20);
        assert_eq!(
            a.path,
            "topic=payments.capture.v1/date=2025-11-21/hour=04/payments.capture.v1-002-00000000000000000010-00000000000000000020.parquet"
        );
        let mut other = records.clone();
        other[3].value = Some(b"changed".to_vec());
        assert_ne!(encode(&other).unwrap().sha256, a.sha256);
    }

    #[test]
    fn records_read_back_as_written_nulls_and_empties_apart() {
        let mut records: Vec<LogRecord> = (0..5).map(|o| record(o, Some(b"not avro"))).collect();
        records[1].key = None;
        records[2].value = None;
        records[3].value = Some(Vec::new());
        records[3].key = Some(Vec::new());
        records[4].headers.clear();
        records[4].timestamp_ms = None;
        let file = encode(&records).unwrap();
        assert_eq!(read_records(file.bytes).unwrap(), records);
    }

    #[test]
    fn path_round_trips() {
        let p = object_path("payments.dlq.v1", 7, 0, 5, None);
        assert_eq!(parse_object_path(&p), Some(("payments.dlq.v1".into(), 7, 0, 5)));
        assert_eq!(parse_object_path("topic=a/date=x/hour=1/b-001-1-2.parquet"), None);
    }

    #[test]
    fn refuses_mixed_or_unordered_records() {
        assert!(encode(&[]).is_err());
        assert!(encode(&[record(5, None), record(4, None)]).is_err());
        let mut other = record(6, None);
        other.partition = 3;
        assert!(encode(&[record(5, None), other]).is_err());
    }

    #[test]
    fn reads_back_offsets_without_facts() {
        let records: Vec<LogRecord> = [3, 4, 7].into_iter().map(|o| record(o, None)).collect();
        let f = encode(&records).unwrap();
        let read: Vec<(i64, bool)> =
            read_facts(f.bytes).unwrap().iter().map(|a| (a.offset, a.fact.is_some())).collect();
        assert_eq!(read, vec![(3, false), (4, false), (7, false)]);
        assert_eq!(f.sum, RangeSum { records: 3, facts: 0, key_sum: 0, money_sum: 0 });
    }

    #[test]
    fn facts_read_back_with_their_money_and_the_sum_counts_it() {
        use tally_domain::{Attributes, EventKind, PaymentEvent, Psp, Source, Timestamp};
        use tally_money::{Amount, Currency, Money};
        let event = |kind, minor, fee: Option<i64>| PaymentEvent {
            kind,
            payment_id: "stripe:pi_1".into(),
            psp: Psp::Stripe,
            psp_reference: "pi_1".into(),
            original_reference: None,
            merchant_id: "m_1".into(),
            money: Money::new(Amount::from_minor(minor), Currency::from_code("JPY").unwrap()),
            fee: fee.map(Amount::from_minor),
            occurred_at: Timestamp::from_unix_secs(1_760_000_000).unwrap(),
            received_at: Timestamp::from_unix_secs(1_760_000_100).unwrap(),
            source: Source::Webhook,
            source_event_id: format!("evt_{kind}"),
            attributes: Attributes::default(),
        };
        let events = [event(EventKind::Authorized, 5000, None), event(EventKind::Settled, 5000, Some(175))];
        let mut records: Vec<LogRecord> = events
            .iter()
            .enumerate()
            .map(|(i, e)| record(i as i64, Some(&tally_contracts::encode_payment_event(e, None).unwrap())))
            .collect();
        records.push(record(2, Some(b"not avro")));
        let file = encode(&records).unwrap();
        let read = read_facts(file.bytes.clone()).unwrap();
        let mut sum = RangeSum::default();
        for (a, e) in read.iter().zip(&events) {
            let (key, money) = a.fact.as_ref().unwrap();
            assert_eq!(*key, e.fact_key().0);
            assert_eq!(money.amount_minor, 5000);
            assert_eq!(money.currency, "JPY");
            assert_eq!(money.fee_minor, e.fee.map(|f| f.minor()));
        }
        assert_eq!(read[2], ArchivedFact { offset: 2, fact: None });
        for a in &read {
            sum.add(a.offset, a.fact.as_ref().map(|(k, m)| (*k, m)));
        }
        assert_eq!(sum, file.sum);
        assert_eq!((file.sum.records, file.sum.facts), (3, 2));
    }
}
