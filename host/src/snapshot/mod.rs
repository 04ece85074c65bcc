//! `POST /snapshot`: JSON rows in, one ZSTD Parquet object out.
//!
//! The request and response are the Node sidecar's. The pipeline is:
//! validate the envelope, stream `data` into Arrow builders ([`rows`]),
//! sort by `created_at` (else `started_at`), encode Parquet with 50,000-row
//! groups, then one PUT. Nothing is written to the store until the whole
//! object exists in memory, so a failed request leaves no partial object.

mod convert;
mod rows;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::{sort_to_indices, take, SortOptions};
use arrow::datatypes::Schema;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::value::RawValue;
use serde_json::{json, Value};

pub use convert::ColumnType;

use crate::error::Error;
use crate::objects::{parse_key, s3_config_field, S3Config};
use crate::request::Field;

/// Rows per Parquet row group, as the Node sidecar wrote them.
pub const ROW_GROUP_SIZE: usize = 50_000;

/// Declared columns per snapshot, at most.
pub const MAX_COLUMNS: usize = 1024;

/// One declared column: where its values come from and what they become.
#[derive(Debug, Clone)]
pub struct Column {
    pub source: String,
    pub target: String,
    pub ty: ColumnType,
}

/// A validated snapshot request; `data` is still the raw JSON text.
pub struct SnapshotRequest<'a> {
    pub table_name: String,
    pub columns: Vec<Column>,
    pub s3_key: String,
    pub s3_config: Option<S3Config>,
    data: &'a str,
}

impl<'a> SnapshotRequest<'a> {
    /// Validates everything but the rows, which are read later in one pass.
    pub fn parse(body: &'a [u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(body).map_err(|_| Error::InvalidJson)?;
        let top: BTreeMap<String, &'a RawValue> = match serde_json::from_str(text) {
            Ok(top) => top,
            Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                return Err(Error::invalid("request body must be a JSON object"))
            }
            Err(_) => return Err(Error::InvalidJson),
        };
        let small: serde_json::Map<String, Value> = top
            .iter()
            .filter(|(k, _)| k.as_str() != "data")
            .map(|(k, v)| Ok((k.clone(), serde_json::from_str(v.get()).map_err(|_| Error::InvalidJson)?)))
            .collect::<Result<_, Error>>()?;

        let table_name = Field::new("table_name").required_str(&small)?.to_string();
        let s3_key = Field::new("s3_key").required_str(&small)?.to_string();
        parse_key("s3_key", &s3_key)?;
        let s3_config = s3_config_field(&small)?;

        let columns_field = Field::new("columns");
        let raw_columns = columns_field.array(small.get("columns"))?;
        if raw_columns.is_empty() {
            return Err(Error::invalid("columns must be non-empty"));
        }
        if raw_columns.len() > MAX_COLUMNS {
            return Err(Error::invalid(format!("columns may have at most {MAX_COLUMNS} entries")));
        }
        let mut columns = Vec::with_capacity(raw_columns.len());
        let mut targets = HashSet::new();
        for (i, c) in raw_columns.iter().enumerate() {
            let at = columns_field.index(i);
            let obj = at.object(c)?;
            let source = at.child("source").required_str(obj)?.to_string();
            let target = at.child("target").required_str(obj)?.to_string();
            let declared = at.child("type").required_str(obj)?;
            let ty = ColumnType::parse(declared).map_err(|e| Error::invalid(format!("{}.type: {e}", at.name())))?;
            if !targets.insert(target.to_ascii_lowercase()) {
                return Err(Error::invalid(format!("{}.target \"{target}\" is used by another column", at.name())));
            }
            columns.push(Column { source, target, ty });
        }

        let data = top
            .get("data")
            .map(|raw| raw.get())
            .ok_or_else(|| Error::invalid("data must be an array"))?;
        if !data.trim_start().starts_with('[') {
            return Err(Error::invalid("data must be an array"));
        }
        Ok(SnapshotRequest { table_name, columns, s3_key, s3_config, data })
    }
}

/// An encoded snapshot, ready to upload.
pub struct Encoded {
    pub parquet: Vec<u8>,
    pub row_count: usize,
}

/// The request's rows as one Arrow batch (the only step that reads the body).
pub fn convert(req: &SnapshotRequest<'_>) -> Result<RecordBatch, Error> {
    let capacity = estimate_rows(req.data, req.columns.len());
    let (arrays, _) = rows::RowSink::new(&req.columns, capacity)
        .read(req.data)
        .map_err(Error::Invalid)?;
    let schema = Arc::new(Schema::new(
        req.columns.iter().map(|c| c.ty.field(&c.target)).collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, arrays).map_err(Error::internal)
}

/// Sorts by `created_at`, else `started_at`, and writes ZSTD Parquet.
/// Takes the batch by value so each copy is dropped as soon as it is used:
/// memory at peak is the batch, one sorted column and the encoder.
pub fn encode(mut batch: RecordBatch) -> Result<Encoded, Error> {
    let row_count = batch.num_rows();
    let sort_by = ["created_at", "started_at"].iter().find_map(|name| batch.schema().index_of(name).ok());
    if let Some(sort_by) = sort_by {
        let options = SortOptions { descending: false, nulls_first: false };
        let order = sort_to_indices(batch.column(sort_by), Some(options), None).map_err(Error::internal)?;
        let schema = batch.schema();
        let mut columns = batch.columns().to_vec();
        drop(batch);
        for column in &mut columns {
            *column = take(column.as_ref(), &order, None).map_err(Error::internal)?;
        }
        batch = RecordBatch::try_new(schema, columns).map_err(Error::internal)?;
    }
    let mut writer = ArrowWriter::try_new(Vec::with_capacity(batch.get_array_memory_size() / 4), batch.schema(), Some(writer_properties()))
        .map_err(Error::internal)?;
    writer.write(&batch).map_err(Error::internal)?;
    drop(batch);
    Ok(Encoded { parquet: writer.into_inner().map_err(Error::internal)?, row_count })
}

/// Parquet writer settings shared with the benchmark's reference loop.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_max_row_group_row_count(Some(ROW_GROUP_SIZE))
        .set_created_by(format!("duckgate {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A cheap guess at the row count, to size builders: each row carries at
/// least a few bytes per declared column. A wrong guess only costs a regrow.
fn estimate_rows(data: &str, columns: usize) -> usize {
    (data.len() / (16 * columns.max(1))).clamp(16, 1 << 20)
}

/// Runs a whole snapshot: admission, then parse, check and encode on a
/// blocking thread (the endpoint allowlist is checked before any row is
/// read), then upload.
pub async fn run(state: &crate::server::AppState, body: axum::body::Bytes) -> Result<Value, Error> {
    let started = Instant::now();
    let _admitted = state.snapshots.admit().await.map_err(|full| Error::Busy {
        message: format!(
            "sidecar snapshot queue is full ({}/{}); retry shortly",
            full.queued, full.max_queue
        ),
        extra: json!({"status": "busy", "queue_running": full.running, "queue_queued": full.queued})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    })?;
    let stores = state.stores.clone();
    let (bucket, table_name, s3_key, encoded) = tokio::task::spawn_blocking(move || {
        let req = SnapshotRequest::parse(&body)?;
        let bucket = stores.bucket_for(req.s3_config.as_ref())?;
        let batch = convert(&req)?;
        let (table_name, s3_key) = (req.table_name, req.s3_key);
        // The body is the largest thing a snapshot holds; it is done with.
        drop(body);
        Ok::<_, Error>((bucket, table_name, s3_key, encode(batch)?))
    })
    .await??;
    let encoded_at = started.elapsed();
    let path = parse_key("s3_key", &s3_key)?;
    let size = encoded.parquet.len();
    bucket
        .store()
        .put(&path, PutPayload::from(encoded.parquet))
        .await
        .map_err(|e| bucket.error("writing s3_key", e))?;
    tracing::info!(
        table = %table_name,
        key = %s3_key,
        rows = encoded.row_count,
        bytes = size,
        encode_ms = encoded_at.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(json!({ "s3_key": s3_key, "row_count": encoded.row_count, "parquet_size_bytes": size }))
}
