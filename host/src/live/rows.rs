//! Rows of the live tables as plain structs, and their Arrow batches for
//! DuckDB's appender (one data chunk per 2,048 rows instead of one call per
//! value).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// One span (`otel_spans_local`).
#[derive(Debug, Clone, Default)]
pub struct SpanRow {
    pub timestamp_us: i64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service_name: String,
    pub span_name: String,
    pub span_kind: String,
    pub duration_ms: f64,
    pub is_error: bool,
    pub http_status: Option<i32>,
    pub http_method: Option<String>,
    pub http_route: Option<String>,
    pub attributes: String,
}

/// One non-empty histogram bucket (`histogram_buckets_local`).
#[derive(Debug, Clone, Default)]
pub struct BucketRow {
    pub timestamp_us: i64,
    pub service_name: String,
    pub metric_name: String,
    pub unit: String,
    pub http_method: Option<String>,
    pub http_route: Option<String>,
    pub http_status_code: Option<i32>,
    pub attributes: String,
    /// The previous explicit bound; `None` for the first bucket.
    pub bucket_lower: Option<f64>,
    pub bucket_le: f64,
    pub count: i64,
}

/// One gauge or sum point (`system_metrics_local`).
#[derive(Debug, Clone, Default)]
pub struct MetricRow {
    pub timestamp_us: i64,
    pub metric_name: String,
    pub value: f64,
    pub unit: String,
    pub metric_type: String,
    pub service_name: Option<String>,
    pub attributes: String,
}

/// Rows bound for the live tables in one write.
#[derive(Debug, Default)]
pub struct Rows {
    pub spans: Vec<SpanRow>,
    pub buckets: Vec<BucketRow>,
    pub metrics: Vec<MetricRow>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.spans.len() + self.buckets.len() + self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn extend(&mut self, other: Rows) {
        self.spans.extend(other.spans);
        self.buckets.extend(other.buckets);
        self.metrics.extend(other.metrics);
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

pub fn spans_batch(rows: &[SpanRow]) -> RecordBatch {
    let n = rows.len();
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n);
    let mut trace_id = StringBuilder::new();
    let mut span_id = StringBuilder::new();
    let mut parent = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut duration = Float64Builder::with_capacity(n);
    let mut error = BooleanBuilder::with_capacity(n);
    let mut status = Int32Builder::with_capacity(n);
    let mut method = StringBuilder::new();
    let mut route = StringBuilder::new();
    let mut attributes = StringBuilder::new();
    for r in rows {
        timestamp.append_value(r.timestamp_us);
        trace_id.append_value(&r.trace_id);
        span_id.append_value(&r.span_id);
        parent.append_option(r.parent_span_id.as_deref());
        service.append_value(&r.service_name);
        name.append_value(&r.span_name);
        kind.append_value(&r.span_kind);
        duration.append_value(r.duration_ms);
        error.append_value(r.is_error);
        status.append_option(r.http_status);
        method.append_option(r.http_method.as_deref());
        route.append_option(r.http_route.as_deref());
        attributes.append_value(&r.attributes);
    }
    let schema = Schema::new(vec![
        Field::new("timestamp", ts(), false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("span_name", DataType::Utf8, true),
        Field::new("span_kind", DataType::Utf8, true),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("is_error", DataType::Boolean, false),
        Field::new("http_status", DataType::Int32, true),
        Field::new("http_method", DataType::Utf8, true),
        Field::new("http_route", DataType::Utf8, true),
        Field::new("attributes", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamp.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(duration.finish()),
        Arc::new(error.finish()),
        Arc::new(status.finish()),
        Arc::new(method.finish()),
        Arc::new(route.finish()),
        Arc::new(attributes.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("span batch matches its schema")
}

pub fn buckets_batch(rows: &[BucketRow]) -> RecordBatch {
    let n = rows.len();
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n);
    let mut service = StringBuilder::new();
    let mut metric = StringBuilder::new();
    let mut unit = StringBuilder::new();
    let mut method = StringBuilder::new();
    let mut route = StringBuilder::new();
    let mut status = Int32Builder::with_capacity(n);
    let mut attributes = StringBuilder::new();
    let mut lower = Float64Builder::with_capacity(n);
    let mut le = Float64Builder::with_capacity(n);
    let mut count = Int64Builder::with_capacity(n);
    for r in rows {
        timestamp.append_value(r.timestamp_us);
        service.append_value(&r.service_name);
        metric.append_value(&r.metric_name);
        unit.append_value(&r.unit);
        method.append_option(r.http_method.as_deref());
        route.append_option(r.http_route.as_deref());
        status.append_option(r.http_status_code);
        attributes.append_value(&r.attributes);
        lower.append_option(r.bucket_lower);
        le.append_value(r.bucket_le);
        count.append_value(r.count);
    }
    let schema = Schema::new(vec![
        Field::new("timestamp", ts(), false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, true),
        Field::new("http_method", DataType::Utf8, true),
        Field::new("http_route", DataType::Utf8, true),
        Field::new("http_status_code", DataType::Int32, true),
        Field::new("attributes", DataType::Utf8, true),
        Field::new("bucket_lower", DataType::Float64, true),
        Field::new("bucket_le", DataType::Float64, false),
        Field::new("count", DataType::Int64, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamp.finish()),
        Arc::new(service.finish()),
        Arc::new(metric.finish()),
        Arc::new(unit.finish()),
        Arc::new(method.finish()),
        Arc::new(route.finish()),
        Arc::new(status.finish()),
        Arc::new(attributes.finish()),
        Arc::new(lower.finish()),
        Arc::new(le.finish()),
        Arc::new(count.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("bucket batch matches its schema")
}

pub fn metrics_batch(rows: &[MetricRow]) -> RecordBatch {
    let n = rows.len();
    let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n);
    let mut metric = StringBuilder::new();
    let mut value = Float64Builder::with_capacity(n);
    let mut unit = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut attributes = StringBuilder::new();
    for r in rows {
        timestamp.append_value(r.timestamp_us);
        metric.append_value(&r.metric_name);
        value.append_value(r.value);
        unit.append_value(&r.unit);
        kind.append_value(&r.metric_type);
        service.append_option(r.service_name.as_deref());
        attributes.append_value(&r.attributes);
    }
    let schema = Schema::new(vec![
        Field::new("timestamp", ts(), false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("unit", DataType::Utf8, true),
        Field::new("metric_type", DataType::Utf8, true),
        Field::new("service_name", DataType::Utf8, true),
        Field::new("attributes", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(timestamp.finish()),
        Arc::new(metric.finish()),
        Arc::new(value.finish()),
        Arc::new(unit.finish()),
        Arc::new(kind.finish()),
        Arc::new(service.finish()),
        Arc::new(attributes.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("metric batch matches its schema")
}
