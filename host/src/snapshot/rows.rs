//! Streams the `data` array of a snapshot request straight into Arrow column
//! builders.
//!
//! The Node sidecar built a JavaScript object per row and inserted rows one
//! prepared statement at a time (over 99% of its time). Here serde walks the
//! JSON once: each field whose name is a column source is converted and
//! appended in place, every other field is skipped without being built, and
//! no per-row tree exists, so memory stays near the size of the body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use arrow::array::ArrayRef;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::convert::{Cell, ColumnBuilder};
use super::Column;

/// Cells (rows x declared columns) one snapshot may hold: bounds the work
/// of a body of many empty rows against many declared columns.
pub const MAX_CELLS: usize = 100_000_000;

/// Column builders for one request, filled row by row.
pub struct RowSink<'c> {
    columns: &'c [Column],
    builders: Vec<ColumnBuilder>,
    /// Source field name -> index into `groups`.
    by_source: HashMap<&'c str, usize>,
    /// The columns each source field feeds (usually one).
    groups: Vec<Vec<usize>>,
    /// Row number (1-based) that last set each column; 0 = never.
    set_in_row: Vec<usize>,
    rows: usize,
    /// The first conversion or shape error, with row and column named.
    failure: Option<String>,
}

impl<'c> RowSink<'c> {
    pub fn new(columns: &'c [Column], capacity: usize) -> Self {
        let mut by_source: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let g = *by_source.entry(c.source.as_str()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        RowSink {
            columns,
            builders: columns.iter().map(|c| ColumnBuilder::new(c.ty, capacity)).collect(),
            by_source,
            groups,
            set_in_row: vec![0; columns.len()],
            rows: 0,
            failure: None,
        }
    }

    /// Reads `data` (the raw JSON text of the array) into the builders.
    /// The error names the row and column at fault.
    pub fn read(mut self, data: &str) -> Result<(Vec<ArrayRef>, usize), String> {
        let mut de = serde_json::Deserializer::from_str(data);
        let result = RowsSeed(&mut self).deserialize(&mut de).and_then(|()| de.end());
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        result.map_err(|e| format!("data is not valid: {e}"))?;
        let arrays = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        Ok((arrays, self.rows))
    }

    fn fail<E: de::Error>(&mut self, message: String) -> E {
        self.failure.get_or_insert(message);
        E::custom("stopped")
    }
}

struct RowsSeed<'s, 'c>(&'s mut RowSink<'c>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of row objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RowSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.0.fail("data must be an array".into()))
    }
}

struct RowSeed<'s, 'c>(&'s mut RowSink<'c>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RowSeed<'_, '_> {
    fn not_an_object<E: de::Error>(self) -> Result<(), E> {
        let row = self.0.rows;
        Err(self.0.fail(format!("data[{row}] must be an object")))
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.0;
        let row = sink.rows;
        let stamp = row + 1;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(&group) = sink.by_source.get(key.as_ref()) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let cell = map.next_value_seed(CellSeed)?;
            for k in 0..sink.groups[group].len() {
                let i = sink.groups[group][k];
                let column = &sink.columns[i];
                if sink.set_in_row[i] == stamp {
                    return Err(sink.fail(format!("data[{row}] has the field \"{}\" more than once", column.source)));
                }
                sink.set_in_row[i] = stamp;
                if let Err(why) = sink.builders[i].append(&cell, column.ty) {
                    return Err(sink.fail(format!("data[{row}].{} (column \"{}\"): {why}", column.source, column.target)));
                }
            }
        }
        for (i, builder) in sink.builders.iter_mut().enumerate() {
            if sink.set_in_row[i] != stamp {
                builder.append_null();
            }
        }
        sink.rows += 1;
        if sink.rows.saturating_mul(sink.columns.len()) > MAX_CELLS {
            return Err(sink.fail(format!("data has more than {MAX_CELLS} cells (rows x columns); split the snapshot")));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_an_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object()
    }
}

/// Reads a field name, borrowing it from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// Reads one field value as a [`Cell`], borrowing strings without escapes.
struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_none<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Cell<'de>, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Cell<'de>, E> {
        Ok(Cell::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Cell<'de>, E> {
        Ok(Cell::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Cell<'de>, E> {
        Ok(Cell::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Cell<'de>, E> {
        Ok(Cell::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Cell::Nested(value))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Cell::Nested(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    use crate::snapshot::ColumnType;

    fn columns() -> Vec<Column> {
        vec![
            Column { source: "_id".into(), target: "id".into(), ty: ColumnType::Varchar },
            Column { source: "n".into(), target: "n".into(), ty: ColumnType::BigInt },
            Column { source: "n".into(), target: "n_text".into(), ty: ColumnType::Varchar },
            Column { source: "doc".into(), target: "doc".into(), ty: ColumnType::Json },
        ]
    }

    #[test]
    fn streams_rows_into_columns() {
        let cols = columns();
        let data = r#"[{"_id":"a","n":"7","doc":{"x":[1,2]},"skip":{"deep":[1]}},{"_id":"b\u00e9"},{"n":1.6}]"#;
        let (arrays, rows) = RowSink::new(&cols, 4).read(data).unwrap();
        assert_eq!(rows, 3);
        let ids = arrays[0].as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1), ids.is_null(2)), ("a", "bé", true));
        let n = arrays[1].as_primitive::<Int64Type>();
        assert_eq!((n.value(0), n.is_null(1), n.value(2)), (7, true, 2));
        assert_eq!(arrays[2].as_string::<i32>().value(2), "1.6");
        assert_eq!(arrays[3].as_string::<i32>().value(0), r#"{"x":[1,2]}"#);
    }

    #[test]
    fn errors_name_row_and_column() {
        let cols = columns();
        let err = RowSink::new(&cols, 4).read(r#"[{"n":1},{"n":"abc"}]"#).unwrap_err();
        assert_eq!(err, "data[1].n (column \"n\"): cannot convert \"abc\" to BIGINT");
        let err = RowSink::new(&cols, 4).read(r#"[{"n":1}, 5]"#).unwrap_err();
        assert_eq!(err, "data[1] must be an object");
        let err = RowSink::new(&cols, 4).read(r#"{"n":1}"#).unwrap_err();
        assert_eq!(err, "data must be an array");
        let err = RowSink::new(&cols, 4).read(r#"[{"n":1,"n":2}]"#).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
    }
}
