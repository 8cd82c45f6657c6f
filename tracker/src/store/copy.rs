//! Rows in PostgreSQL's binary `COPY` format, for the events the write path knows are new.
//!
//! `COPY … from stdin (format binary)` is the cheapest way into a table PostgreSQL offers:
//! no statement to plan, no parameter arrays to decode and `unnest`, and rows reach each day
//! partition in multi-row batches. It cannot skip rows that exist (`on conflict`), which is
//! why only events known to be new take it (`write::write_batch_on`). The format (see
//! PostgreSQL's documentation of `COPY`, "Binary Format"): a signature and two 32-bit words,
//! then per row a 16-bit field count and per field a 32-bit length (−1 for null) followed by
//! the value in the type's binary send form, then a 16-bit −1.
//!
//! Values are written exactly as sqlx binds them (timestamps as whole microseconds since
//! 2000-01-01 counted by `TimeDelta::num_microseconds`), so a row copied and a row inserted
//! read back the same.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

/// `PGCOPY\n\377\r\n\0`, then no flags and no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// PostgreSQL's epoch for `date` and `timestamptz`.
fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// PostgreSQL's epoch for `timestamptz`, 2000-01-01 00:00 UTC.
pub fn epoch() -> DateTime<Utc> {
    epoch_date().and_time(chrono::NaiveTime::MIN).and_utc()
}

/// `t` as PostgreSQL's binary `timestamptz`: microseconds since [`epoch`], or `None` beyond
/// ±292,000 years (where sqlx refuses to bind it too).
pub fn pg_micros(t: DateTime<Utc>) -> Option<i64> {
    (t - epoch()).num_microseconds()
}

/// A value the binary format cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("{0} is out of range for PostgreSQL")]
pub struct OutOfRange(String);

/// A buffer of binary `COPY` rows with a fixed number of fields each.
#[derive(Debug)]
pub struct BinaryRows {
    buf: Vec<u8>,
    fields: i16,
    /// Fields written in the current row (checked against `fields` in debug builds).
    written: i16,
}

impl BinaryRows {
    pub fn new(fields: i16, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER.len() + 2));
        buf.extend_from_slice(HEADER);
        BinaryRows {
            buf,
            fields,
            written: fields,
        }
    }

    /// Starts a row; the next `fields` calls fill it.
    pub fn row(&mut self) {
        debug_assert_eq!(self.written, self.fields, "the previous row is incomplete");
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
        self.written = 0;
    }

    fn field(&mut self, value: &[u8]) {
        // A Kafka message is far below 2 GiB, so no field of one reaches i32::MAX.
        let len = i32::try_from(value.len()).expect("a field under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.written += 1;
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self.written += 1;
    }

    /// `text` (UTF-8, as the database's encoding is).
    pub fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    pub fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn opt_int4(&mut self, value: Option<i32>) {
        match value {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    pub fn opt_int8(&mut self, value: Option<i64>) {
        match value {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> Result<(), OutOfRange> {
        let micros = pg_micros(value).ok_or_else(|| OutOfRange(value.to_string()))?;
        self.field(&micros.to_be_bytes());
        Ok(())
    }

    pub fn date(&mut self, value: NaiveDate) -> Result<(), OutOfRange> {
        let days = i32::try_from((value - epoch_date()).num_days())
            .map_err(|_| OutOfRange(value.to_string()))?;
        self.field(&days.to_be_bytes());
        Ok(())
    }

    /// `jsonb`: a version byte (1) and the JSON text, serialised straight into the buffer.
    pub fn opt_jsonb(&mut self, value: Option<&Map<String, Value>>) {
        let Some(map) = value else {
            return self.null();
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, 1]);
        serde_json::to_writer(&mut self.buf, map).expect("a JSON object always serialises");
        let len = i32::try_from(self.buf.len() - start - 4).expect("a field under 2 GiB");
        self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        self.written += 1;
    }

    /// The finished `COPY` data, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        debug_assert_eq!(self.written, self.fields, "the last row is incomplete");
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}
