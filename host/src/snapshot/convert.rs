//! Declared column types and the conversion of one JSON value into one
//! of them, following DuckDB's casts so a payload that loaded through the
//! Node sidecar loads the same here.
//!
//! Two deliberate differences, both where the sidecar failed the request:
//! a number into TIMESTAMP or DATE is epoch milliseconds (what Convex sends),
//! and a string that is not JSON text into a JSON column is stored as a JSON
//! string instead of being refused.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, Int8Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

/// A column type a snapshot may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Varchar,
    Json,
    TinyInt,
    SmallInt,
    Integer,
    BigInt,
    Float,
    Double,
    Boolean,
    Decimal { precision: u8, scale: i8 },
    Date,
    Timestamp,
    TimestampTz,
}

pub const SUPPORTED: &str = "VARCHAR, JSON, TINYINT, SMALLINT, INTEGER, BIGINT, FLOAT, DOUBLE, BOOLEAN, DECIMAL(p,s), DATE, TIMESTAMP, TIMESTAMPTZ";

impl ColumnType {
    /// Parses a declared type (`DECIMAL(10, 2)`, `timestamp`, `INT8`, ...).
    pub fn parse(declared: &str) -> Result<Self, String> {
        let upper = declared.trim().to_ascii_uppercase();
        let (name, args) = match upper.find('(') {
            Some(open) if upper.ends_with(')') => {
                let args: Vec<&str> = upper[open + 1..upper.len() - 1].split(',').map(str::trim).collect();
                (upper[..open].trim().to_string(), Some(args))
            }
            Some(_) => return Err(format!("unsupported type \"{declared}\"; use one of {SUPPORTED}")),
            None => (upper.clone(), None),
        };
        let unsupported = || format!("unsupported type \"{declared}\"; use one of {SUPPORTED}");
        let ty = match (name.as_str(), &args) {
            ("VARCHAR" | "TEXT" | "STRING" | "CHAR" | "BPCHAR" | "UUID", _) => ColumnType::Varchar,
            ("JSON", None) => ColumnType::Json,
            ("TINYINT" | "INT1", None) => ColumnType::TinyInt,
            ("SMALLINT" | "INT2" | "SHORT", None) => ColumnType::SmallInt,
            ("INTEGER" | "INT" | "INT4" | "SIGNED", None) => ColumnType::Integer,
            ("BIGINT" | "INT8" | "LONG", None) => ColumnType::BigInt,
            ("FLOAT" | "REAL" | "FLOAT4", None) => ColumnType::Float,
            ("DOUBLE" | "FLOAT8" | "DOUBLE PRECISION", None) => ColumnType::Double,
            ("BOOLEAN" | "BOOL" | "LOGICAL", None) => ColumnType::Boolean,
            ("DATE", None) => ColumnType::Date,
            ("TIMESTAMP" | "DATETIME" | "TIMESTAMP WITHOUT TIME ZONE", None) => ColumnType::Timestamp,
            ("TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE", None) => ColumnType::TimestampTz,
            ("DECIMAL" | "NUMERIC", None) => ColumnType::Decimal { precision: 18, scale: 3 },
            ("DECIMAL" | "NUMERIC", Some(args)) => {
                let num = |s: &str| s.parse::<u8>().map_err(|_| unsupported());
                let (precision, scale) = match args.as_slice() {
                    [p] => (num(p)?, 0),
                    [p, s] => (num(p)?, num(s)?),
                    _ => return Err(unsupported()),
                };
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(format!(
                        "unsupported type \"{declared}\": DECIMAL needs 1 <= precision <= 38 and scale <= precision"
                    ));
                }
                ColumnType::Decimal { precision, scale: scale as i8 }
            }
            _ => return Err(unsupported()),
        };
        Ok(ty)
    }

    pub fn name(&self) -> String {
        match self {
            ColumnType::Varchar => "VARCHAR".into(),
            ColumnType::Json => "JSON".into(),
            ColumnType::TinyInt => "TINYINT".into(),
            ColumnType::SmallInt => "SMALLINT".into(),
            ColumnType::Integer => "INTEGER".into(),
            ColumnType::BigInt => "BIGINT".into(),
            ColumnType::Float => "FLOAT".into(),
            ColumnType::Double => "DOUBLE".into(),
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            ColumnType::Date => "DATE".into(),
            ColumnType::Timestamp => "TIMESTAMP".into(),
            ColumnType::TimestampTz => "TIMESTAMPTZ".into(),
        }
    }

    /// The Arrow field that the Parquet writer maps to this DuckDB type.
    pub fn field(&self, name: &str) -> Field {
        let data_type = match self {
            ColumnType::Varchar | ColumnType::Json => DataType::Utf8,
            ColumnType::TinyInt => DataType::Int8,
            ColumnType::SmallInt => DataType::Int16,
            ColumnType::Integer => DataType::Int32,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Float => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        };
        let field = Field::new(name, data_type, true);
        if *self == ColumnType::Json {
            // Parquet's JSON logical type, which DuckDB reads back as JSON.
            field.with_extension_type(arrow_schema::extension::Json::default())
        } else {
            field
        }
    }
}

/// One JSON value of a row, borrowed from the request body where possible.
#[derive(Debug)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Nested(Value),
}

impl Cell<'_> {
    fn describe(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Bool(b) => b.to_string(),
            Cell::I64(v) => v.to_string(),
            Cell::U64(v) => v.to_string(),
            Cell::F64(v) => v.to_string(),
            Cell::Str(s) => {
                let short: String = s.chars().take(60).collect();
                serde_json::to_string(&short).unwrap_or_default()
            }
            Cell::Nested(v) if v.is_array() => "an array".into(),
            Cell::Nested(_) => "an object".into(),
        }
    }
}

/// Builds one Arrow column from cells.
pub enum ColumnBuilder {
    Utf8(StringBuilder, bool),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
}

impl ColumnBuilder {
    pub fn new(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::Varchar => ColumnBuilder::Utf8(StringBuilder::with_capacity(capacity, capacity * 8), false),
            ColumnType::Json => ColumnBuilder::Utf8(StringBuilder::with_capacity(capacity, capacity * 8), true),
            ColumnType::TinyInt => ColumnBuilder::I8(Int8Builder::with_capacity(capacity)),
            ColumnType::SmallInt => ColumnBuilder::I16(Int16Builder::with_capacity(capacity)),
            ColumnType::Integer => ColumnBuilder::I32(Int32Builder::with_capacity(capacity)),
            ColumnType::BigInt => ColumnBuilder::I64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float => ColumnBuilder::F32(Float32Builder::with_capacity(capacity)),
            ColumnType::Double => ColumnBuilder::F64(Float64Builder::with_capacity(capacity)),
            ColumnType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Decimal { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity),
                precision,
                scale,
            ),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            ColumnType::TimestampTz => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), true),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Utf8(b, _) => b.append_null(),
            ColumnBuilder::I8(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Decimal(b, _, _) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b, _) => b.append_null(),
        }
    }

    /// Appends one cell, converted as DuckDB would cast it; the error says
    /// what could not be converted into what.
    pub fn append(&mut self, cell: &Cell<'_>, ty: ColumnType) -> Result<(), String> {
        if matches!(cell, Cell::Null) {
            self.append_null();
            return Ok(());
        }
        let fail = |why: &str| {
            let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
            format!("cannot convert {} to {}{why}", cell.describe(), ty.name())
        };
        match self {
            ColumnBuilder::Utf8(b, false) => b.append_value(to_varchar(cell)),
            ColumnBuilder::Utf8(b, true) => b.append_value(to_json_text(cell)),
            ColumnBuilder::I8(b) => b.append_value(narrow(to_i64(cell).map_err(|w| fail(w))?).map_err(|w| fail(w))?),
            ColumnBuilder::I16(b) => b.append_value(narrow(to_i64(cell).map_err(|w| fail(w))?).map_err(|w| fail(w))?),
            ColumnBuilder::I32(b) => b.append_value(narrow(to_i64(cell).map_err(|w| fail(w))?).map_err(|w| fail(w))?),
            ColumnBuilder::I64(b) => b.append_value(to_i64(cell).map_err(|w| fail(w))?),
            ColumnBuilder::F32(b) => b.append_value(to_f64(cell).map_err(|w| fail(w))? as f32),
            ColumnBuilder::F64(b) => b.append_value(to_f64(cell).map_err(|w| fail(w))?),
            ColumnBuilder::Bool(b) => b.append_value(to_bool(cell).map_err(|w| fail(w))?),
            ColumnBuilder::Decimal(b, p, s) => b.append_value(to_decimal(cell, *p, *s).map_err(|w| fail(w))?),
            ColumnBuilder::Date(b) => b.append_value(to_date(cell).map_err(|w| fail(w))?),
            ColumnBuilder::Timestamp(b, _) => b.append_value(to_timestamp_us(cell).map_err(|w| fail(w))?),
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Utf8(b, _) => Arc::new(b.finish()),
            ColumnBuilder::I8(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale were validated when parsing the type"),
            ),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, false) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, true) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

fn to_varchar<'a>(cell: &'a Cell<'_>) -> Cow<'a, str> {
    match cell {
        Cell::Str(s) => Cow::Borrowed(s.as_ref()),
        Cell::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Cell::I64(v) => Cow::Owned(v.to_string()),
        Cell::U64(v) => Cow::Owned(v.to_string()),
        Cell::F64(v) => Cow::Owned(double_text(*v)),
        Cell::Nested(v) => Cow::Owned(v.to_string()),
        Cell::Null => Cow::Borrowed(""),
    }
}

/// DuckDB prints an integral double with a trailing `.0`.
fn double_text(v: f64) -> String {
    let text = v.to_string();
    if v.is_finite() && !text.contains(['.', 'e', 'E']) {
        format!("{text}.0")
    } else {
        text
    }
}

fn to_json_text<'a>(cell: &'a Cell<'_>) -> Cow<'a, str> {
    match cell {
        Cell::Str(s) if serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() => Cow::Borrowed(s.as_ref()),
        Cell::Str(s) => Cow::Owned(serde_json::to_string(s.as_ref()).expect("strings serialize")),
        Cell::F64(v) if !v.is_finite() => Cow::Borrowed("null"),
        Cell::Nested(v) => Cow::Owned(v.to_string()),
        other => to_varchar(other),
    }
}

fn to_i64(cell: &Cell<'_>) -> Result<i64, &'static str> {
    match cell {
        Cell::I64(v) => Ok(*v),
        Cell::U64(v) => i64::try_from(*v).map_err(|_| "out of range"),
        Cell::F64(v) => f64_to_i64(*v),
        Cell::Bool(b) => Ok(*b as i64),
        Cell::Str(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(v) => Ok(v),
                Err(_) => match s.parse::<f64>() {
                    Ok(v) if s.bytes().any(|c| c.is_ascii_digit()) => f64_to_i64(v),
                    _ => Err(""),
                },
            }
        }
        Cell::Nested(_) | Cell::Null => Err(""),
    }
}

/// Rounds half away from zero, as DuckDB's DOUBLE to integer cast does.
fn f64_to_i64(v: f64) -> Result<i64, &'static str> {
    let r = v.round();
    if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
        Ok(r as i64)
    } else {
        Err("out of range")
    }
}

fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T, &'static str> {
    T::try_from(v).map_err(|_| "out of range")
}

fn to_f64(cell: &Cell<'_>) -> Result<f64, &'static str> {
    match cell {
        Cell::I64(v) => Ok(*v as f64),
        Cell::U64(v) => Ok(*v as f64),
        Cell::F64(v) => Ok(*v),
        Cell::Bool(b) => Ok(*b as u8 as f64),
        Cell::Str(s) => s.trim().parse::<f64>().map_err(|_| ""),
        Cell::Nested(_) | Cell::Null => Err(""),
    }
}

fn to_bool(cell: &Cell<'_>) -> Result<bool, &'static str> {
    match cell {
        Cell::Bool(b) => Ok(*b),
        Cell::I64(v) => Ok(*v != 0),
        Cell::U64(v) => Ok(*v != 0),
        Cell::F64(v) => Ok(*v != 0.0),
        Cell::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" => Ok(true),
            "false" | "f" | "0" | "no" | "n" => Ok(false),
            _ => Err(""),
        },
        Cell::Nested(_) | Cell::Null => Err(""),
    }
}

/// Decimal as an unscaled i128, rounding half away from zero at `scale`.
fn to_decimal(cell: &Cell<'_>, precision: u8, scale: i8) -> Result<i128, &'static str> {
    let unscaled = match cell {
        Cell::I64(v) => (*v as i128).checked_mul(10i128.pow(scale as u32)).ok_or("out of range")?,
        Cell::U64(v) => (*v as i128).checked_mul(10i128.pow(scale as u32)).ok_or("out of range")?,
        Cell::Bool(b) => (*b as i128) * 10i128.pow(scale as u32),
        // Shortest round-trip text of the double, so 0.1 stays 0.1.
        Cell::F64(v) if v.is_finite() => parse_decimal(&format!("{v:e}"), scale)?,
        Cell::Str(s) => parse_decimal(s.trim(), scale)?,
        _ => return Err(""),
    };
    if unscaled.unsigned_abs() >= 10u128.pow(precision as u32) {
        return Err("out of range for its precision");
    }
    Ok(unscaled)
}

/// Parses `[-+]digits[.digits][e[-+]digits]` exactly into an integer scaled by `10^scale`.
fn parse_decimal(text: &str, scale: i8) -> Result<i128, &'static str> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().map_err(|_| "")?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.as_bytes().first() {
        Some(b'-') => (true, &mantissa[1..]),
        Some(b'+') => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().chain(frac_part.bytes()).all(|c| c.is_ascii_digit())
    {
        return Err("");
    }
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|c| c - b'0').collect();
    // Value = digits * 10^(exp - frac_len); we want digits * 10^(exp - frac_len + scale).
    // In i64 so no input can wrap it; beyond +-100 nothing fits 38 digits anyway.
    let shift = exp as i64 - frac_part.len() as i64 + scale as i64;
    if shift > 100 {
        return Err("out of range");
    }
    if shift < -(digits.len() as i64) {
        // Every digit is below the rounding position.
        return Ok(0);
    }
    let mut value: i128 = 0;
    let keep = if shift >= 0 { digits.len() } else { digits.len().saturating_sub((-shift) as usize) };
    for d in &digits[..keep] {
        value = value.checked_mul(10).and_then(|v| v.checked_add(*d as i128)).ok_or("out of range")?;
    }
    if shift > 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32).ok_or("out of range")?).ok_or("out of range")?;
    } else if keep < digits.len() && digits[keep] >= 5 {
        value = value.checked_add(1).ok_or("out of range")?;
    }
    Ok(if negative { -value } else { value })
}

const MS_PER_DAY: i64 = 86_400_000;

fn to_date(cell: &Cell<'_>) -> Result<i32, &'static str> {
    match cell {
        Cell::Str(s) => {
            let s = s.trim();
            let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .or_else(|_| parse_timestamp(s).map(|ts| ts.date()).ok_or(()))
                .map_err(|_| "expected YYYY-MM-DD")?;
            Ok((date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
        }
        Cell::I64(_) | Cell::U64(_) | Cell::F64(_) => {
            let ms = to_f64(cell)?;
            i32::try_from((ms / MS_PER_DAY as f64).floor() as i64).map_err(|_| "out of range")
        }
        _ => Err(""),
    }
}

fn to_timestamp_us(cell: &Cell<'_>) -> Result<i64, &'static str> {
    match cell {
        Cell::Str(s) => parse_timestamp(s.trim())
            .map(|ts| ts.and_utc().timestamp_micros())
            .ok_or("expected an ISO 8601 timestamp or epoch milliseconds"),
        Cell::I64(ms) => ms.checked_mul(1000).ok_or("out of range"),
        Cell::U64(ms) => i64::try_from(*ms).ok().and_then(|ms| ms.checked_mul(1000)).ok_or("out of range"),
        Cell::F64(ms) => f64_to_i64(ms * 1000.0),
        _ => Err(""),
    }
}

/// ISO 8601 / RFC 3339 and DuckDB's own text forms; an offset converts to UTC.
fn parse_timestamp(s: &str) -> Option<NaiveDateTime> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Some(ts.naive_utc());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(ts) = DateTime::parse_from_str(s, format) {
            return Some(ts.naive_utc());
        }
    }
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')).unwrap_or(s);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(s, format) {
            return Some(ts);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Cell<'_> {
        Cell::Str(Cow::Borrowed(v))
    }

    #[test]
    fn parses_declared_types() {
        assert_eq!(ColumnType::parse("decimal(10, 2)").unwrap(), ColumnType::Decimal { precision: 10, scale: 2 });
        assert_eq!(ColumnType::parse(" bigint ").unwrap(), ColumnType::BigInt);
        assert!(ColumnType::parse("VARCHAR; DROP TABLE x").is_err());
        assert!(ColumnType::parse("DECIMAL(40,2)").is_err());
        assert!(ColumnType::parse("GEOMETRY").unwrap_err().contains("use one of"));
    }

    #[test]
    fn integers_cast_like_duckdb() {
        assert_eq!(to_i64(&s(" 42 ")), Ok(42));
        assert_eq!(to_i64(&s("1.5")), Ok(2));
        assert_eq!(to_i64(&Cell::F64(1706140800000.6)), Ok(1706140800001));
        assert_eq!(to_i64(&Cell::F64(-2.5)), Ok(-3));
        assert!(to_i64(&s("abc")).is_err());
        assert!(to_i64(&s("nan")).is_err());
        assert!(narrow::<i16>(70_000).is_err());
    }

    #[test]
    fn decimals_round_half_away_from_zero() {
        assert_eq!(parse_decimal("99.995", 2), Ok(10000));
        assert_eq!(parse_decimal("-1.234", 2), Ok(-123));
        assert_eq!(parse_decimal("1.5e2", 1), Ok(1500));
        assert_eq!(to_decimal(&Cell::F64(0.1), 10, 3), Ok(100));
        assert_eq!(to_decimal(&Cell::F64(99.99), 10, 2), Ok(9999));
        assert!(to_decimal(&s("123456"), 5, 2).is_err());
        assert!(to_decimal(&s("1.2.3"), 5, 2).is_err());
        assert!(to_decimal(&s("1e2147483647"), 18, 3).is_err());
        assert_eq!(to_decimal(&s("9e-2147483647"), 18, 3), Ok(0));
        assert_eq!(parse_decimal("5e-4", 3), Ok(1));
        assert_eq!(parse_decimal("5e-5", 3), Ok(0));
    }

    #[test]
    fn timestamps_from_numbers_are_epoch_ms_and_strings_are_iso() {
        assert_eq!(to_timestamp_us(&Cell::I64(1_706_140_800_000)), Ok(1_706_140_800_000_000));
        assert_eq!(to_timestamp_us(&Cell::F64(1_706_140_800_000.5)), Ok(1_706_140_800_000_500));
        let utc = to_timestamp_us(&s("2024-01-25T00:00:00Z")).unwrap();
        assert_eq!(utc, 1_706_140_800_000_000);
        assert_eq!(to_timestamp_us(&s("2024-01-25 02:00:00+02:00")), Ok(utc));
        assert_eq!(to_timestamp_us(&s("2024-01-25")), Ok(utc));
        assert!(to_timestamp_us(&s("yesterday")).is_err());
    }

    #[test]
    fn dates_and_json_and_text() {
        assert_eq!(to_date(&s("1970-01-02")), Ok(1));
        assert_eq!(to_date(&Cell::I64(MS_PER_DAY * 3 + 5)), Ok(3));
        assert_eq!(to_json_text(&s("{\"a\":1}")), "{\"a\":1}");
        assert_eq!(to_json_text(&s("plain")), "\"plain\"");
        assert_eq!(to_varchar(&Cell::F64(1.0)), "1.0");
        assert_eq!(to_varchar(&Cell::I64(7)), "7");
        assert_eq!(to_bool(&s("T")), Ok(true));
    }
}
