//! Arrow record batches to the sidecar's JSON values, written straight into
//! the response buffer.
//!
//! The Node sidecar returned what node-duckdb produced: integers as numbers
//! unless outside JavaScript's safe range (then strings), timestamps as ISO
//! strings. duckgate keeps that and gives every other type a sensible JSON
//! form: DECIMAL as a number, DATE as `YYYY-MM-DD`, LIST as an array, STRUCT
//! and MAP as objects, NaN and infinities as null (as `JSON.stringify` does).

use std::io::Write;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float16Type, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, IntervalUnit, TimeUnit, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};

/// The largest integer JavaScript represents exactly.
pub const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// Writes one cell as JSON.
pub fn write_value(out: &mut Vec<u8>, array: &dyn Array, row: usize) {
    if array.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    match array.data_type() {
        DataType::Null => out.extend_from_slice(b"null"),
        DataType::Boolean => {
            let v = array.as_boolean().value(row);
            out.extend_from_slice(if v { b"true" } else { b"false" });
        }
        DataType::Int8 => write_int(out, array.as_primitive::<Int8Type>().value(row) as i128),
        DataType::Int16 => write_int(out, array.as_primitive::<Int16Type>().value(row) as i128),
        DataType::Int32 => write_int(out, array.as_primitive::<Int32Type>().value(row) as i128),
        DataType::Int64 => write_int(out, array.as_primitive::<Int64Type>().value(row) as i128),
        DataType::UInt8 => write_int(out, array.as_primitive::<UInt8Type>().value(row) as i128),
        DataType::UInt16 => write_int(out, array.as_primitive::<UInt16Type>().value(row) as i128),
        DataType::UInt32 => write_int(out, array.as_primitive::<UInt32Type>().value(row) as i128),
        DataType::UInt64 => write_int(out, array.as_primitive::<UInt64Type>().value(row) as i128),
        DataType::Float16 => write_float(out, array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => write_float(out, array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => write_float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            write_decimal(out, v, *scale);
        }
        DataType::Decimal256(_, scale) => {
            let v = array.as_primitive::<Decimal256Type>().value(row);
            match v.to_i128() {
                Some(v) => write_decimal(out, v, *scale),
                None => write_str(out, &v.to_string()),
            }
        }
        DataType::Utf8 => write_str(out, array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write_str(out, array.as_string::<i64>().value(row)),
        DataType::Utf8View => write_str(out, array.as_string_view().value(row)),
        DataType::Binary => write_blob(out, array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => write_blob(out, array.as_binary::<i64>().value(row)),
        DataType::BinaryView => write_blob(out, array.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => write_blob(out, array.as_fixed_size_binary().value(row)),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days as i64)));
            match date {
                Some(date) => write_str(out, &date.format("%Y-%m-%d").to_string()),
                // Beyond chrono's range (DuckDB's dates reach further, and 'infinity').
                None => write_formatted(out, array, row),
            }
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            match DateTime::from_timestamp_millis(ms) {
                Some(ts) => write_str(out, &ts.format("%Y-%m-%d").to_string()),
                None => write_formatted(out, array, row),
            }
        }
        DataType::Timestamp(unit, _) => {
            let raw = match unit {
                TimeUnit::Second => array.as_primitive::<arrow::datatypes::TimestampSecondType>().value(row) as i128 * 1_000_000_000,
                TimeUnit::Millisecond => array.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(row) as i128 * 1_000_000,
                TimeUnit::Microsecond => array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(row) as i128 * 1_000,
                TimeUnit::Nanosecond => array.as_primitive::<arrow::datatypes::TimestampNanosecondType>().value(row) as i128,
            };
            write_timestamp(out, raw, array, row);
        }
        DataType::List(_) => write_list(out, &array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => write_list(out, &array.as_list::<i64>().value(row)),
        DataType::FixedSizeList(_, _) => write_list(out, &array.as_fixed_size_list().value(row)),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push(b'{');
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, field.name());
                out.push(b':');
                write_value(out, s.column(i).as_ref(), row);
            }
            out.push(b'}');
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let string_keys = matches!(keys.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
            out.push(if string_keys { b'{' } else { b'[' });
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(b',');
                }
                if string_keys {
                    let mut key = Vec::new();
                    write_value(&mut key, keys.as_ref(), i);
                    out.extend_from_slice(&key);
                    out.push(b':');
                    write_value(out, values.as_ref(), i);
                } else {
                    out.extend_from_slice(b"{\"key\":");
                    write_value(out, keys.as_ref(), i);
                    out.extend_from_slice(b",\"value\":");
                    write_value(out, values.as_ref(), i);
                    out.push(b'}');
                }
            }
            out.push(if string_keys { b'}' } else { b']' });
        }
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let key = dict.normalized_keys()[row];
            write_value(out, dict.values().as_ref(), key);
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>().value(row);
            let _ = write!(out, "{{\"months\":{},\"days\":{},\"micros\":{}}}", v.months, v.days, v.nanoseconds / 1000);
        }
        _ => write_formatted(out, array, row),
    }
}

/// Writes `"columns":[..],"rows":[{..}]` (no braces around), returning the row count.
pub fn write_columns_and_rows(out: &mut Vec<u8>, columns: &[String], batches: &[RecordBatch]) -> usize {
    let mut rows = RowWriter::start(out, columns);
    for batch in batches {
        rows.write_batch(out, batch);
    }
    rows.finish(out)
}

/// Writes `"columns":[..],"rows":[` and then rows batch by batch, so a
/// caller can stop as soon as the output grows past a bound.
pub struct RowWriter {
    names: Vec<Vec<u8>>,
    rows: usize,
}

impl RowWriter {
    pub fn start(out: &mut Vec<u8>, columns: &[String]) -> Self {
        out.extend_from_slice(b"\"columns\":[");
        let mut names = Vec::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut encoded = Vec::with_capacity(name.len() + 2);
            write_str(&mut encoded, name);
            out.extend_from_slice(&encoded);
            names.push(encoded);
        }
        out.extend_from_slice(b"],\"rows\":[");
        RowWriter { names, rows: 0 }
    }

    pub fn write_batch(&mut self, out: &mut Vec<u8>, batch: &RecordBatch) {
        for row in 0..batch.num_rows() {
            if self.rows > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (i, column) in batch.columns().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.names[i]);
                out.push(b':');
                write_value(out, column.as_ref(), row);
            }
            out.push(b'}');
            self.rows += 1;
        }
    }

    /// Closes the rows array; returns how many rows were written.
    pub fn finish(self, out: &mut Vec<u8>) -> usize {
        out.push(b']');
        self.rows
    }
}

/// Rows as JSON objects, for small internal results that get reshaped.
pub fn rows_as_values(batches: &[RecordBatch]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut map = serde_json::Map::new();
            for (i, column) in batch.columns().iter().enumerate() {
                let mut cell = Vec::new();
                write_value(&mut cell, column.as_ref(), row);
                let value = serde_json::from_slice(&cell).unwrap_or(serde_json::Value::Null);
                map.insert(schema.field(i).name().clone(), value);
            }
            rows.push(map);
        }
    }
    rows
}

fn write_int(out: &mut Vec<u8>, v: i128) {
    if v.abs() <= MAX_SAFE_INTEGER {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "\"{v}\"");
    }
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        serde_json::to_writer(out, &v).expect("finite floats serialize");
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    if scale <= 0 {
        // HUGEINT, SUM over integers and DECIMAL(p,0) arrive here.
        match unscaled.checked_mul(10i128.pow((-scale) as u32)) {
            Some(v) => write_int(out, v),
            None => write_str(out, &format!("{unscaled}e{}", -scale)),
        }
    } else {
        // Both operands are exact in f64 for the usual magnitudes, so the
        // quotient is the double nearest the decimal.
        write_float(out, unscaled as f64 / 10f64.powi(scale as i32));
    }
}

fn write_timestamp(out: &mut Vec<u8>, nanos: i128, array: &dyn Array, row: usize) {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    match DateTime::from_timestamp(secs, sub) {
        Some(ts) if sub % 1_000_000 == 0 => write_str(out, &ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        Some(ts) if sub % 1_000 == 0 => write_str(out, &ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        Some(ts) => write_str(out, &ts.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()),
        None => write_formatted(out, array, row),
    }
}

fn write_list(out: &mut Vec<u8>, values: &dyn Array) {
    out.push(b'[');
    for i in 0..values.len() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, values, i);
    }
    out.push(b']');
}

/// BLOBs as DuckDB prints them: printable ASCII as is, other bytes as `\xNN`.
fn write_blob(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut text = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            text.push(b as char);
        } else {
            text.push_str(&format!("\\x{b:02X}"));
        }
    }
    write_str(out, &text);
}

/// Anything without a JSON form of its own: Arrow's display text.
fn write_formatted(out: &mut Vec<u8>, array: &dyn Array, row: usize) {
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array, &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default();
    write_str(out, &text);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("strings serialize");
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, TimestampMicrosecondArray};
    use std::sync::Arc;

    fn one(array: &dyn Array) -> String {
        let mut out = Vec::new();
        write_value(&mut out, array, 0);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_outside_the_safe_range_are_strings() {
        assert_eq!(one(&Int64Array::from(vec![9_007_199_254_740_991])), "9007199254740991");
        assert_eq!(one(&Int64Array::from(vec![9_007_199_254_740_992])), "\"9007199254740992\"");
        let huge = Decimal128Array::from(vec![i128::MAX / 7]).with_precision_and_scale(38, 0).unwrap();
        assert_eq!(one(&huge), format!("\"{}\"", i128::MAX / 7));
    }

    #[test]
    fn decimals_and_timestamps() {
        let d = Decimal128Array::from(vec![9999]).with_precision_and_scale(10, 2).unwrap();
        assert_eq!(one(&d), "99.99");
        let ts = TimestampMicrosecondArray::from(vec![1_706_140_800_000_000]);
        assert_eq!(one(&ts), "\"2024-01-25T00:00:00.000Z\"");
        let ts = TimestampMicrosecondArray::from(vec![1_706_140_800_000_001]);
        assert_eq!(one(&ts), "\"2024-01-25T00:00:00.000001Z\"");
        let nan = arrow::array::Float64Array::from(vec![f64::NAN]);
        assert_eq!(one(&nan), "null");
    }

    #[test]
    fn dates_beyond_chronos_range_do_not_panic() {
        let far = arrow::array::Date32Array::from(vec![i32::MAX]);
        assert!(one(&far).starts_with('"'));
    }

    #[test]
    fn empty_results_keep_their_columns() {
        let mut out = Vec::new();
        let n = write_columns_and_rows(&mut out, &["a".into(), "b\"".into()], &[]);
        assert_eq!(n, 0);
        assert_eq!(String::from_utf8(out).unwrap(), r#""columns":["a","b\""],"rows":[]"#);
        let _ = Arc::new(0);
    }
}
