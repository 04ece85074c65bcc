//! OTLP/HTTP payloads (protobuf or JSON, optionally gzip) into live rows.
//!
//! Spans: duration from start and end, `service.name` from the resource,
//! HTTP fields from the current semantic conventions or the old ones, error
//! from the span status. Histogram points become one row per non-empty
//! bucket, bounds in milliseconds when the unit is seconds; cumulative
//! histograms are turned into deltas per series so summing rows over a
//! window counts each observation once. Gauges and sums become metric rows.
//! What cannot be stored is rejected item by item and reported as OTLP
//! partial success, never by failing the whole request.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality, HistogramDataPoint};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::Message;
use serde_json::{Map, Value};

use super::rows::{BucketRow, MetricRow, Rows, SpanRow};

/// How the payload is encoded, from the Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn from_content_type(content_type: Option<&str>) -> Option<Encoding> {
        let ct = content_type.unwrap_or("application/x-protobuf").split(';').next().unwrap_or("").trim();
        match ct {
            "application/x-protobuf" | "application/protobuf" | "application/octet-stream" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the gzip body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the decompressed body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body is not a valid OTLP {0} message: {1}")]
    Invalid(&'static str, String),
}

/// Undoes `Content-Encoding: gzip`, bounded so a small bomb cannot expand without limit.
pub fn decompress(body: &[u8], gzip: bool, limit: usize) -> Result<Vec<u8>, DecodeError> {
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len() * 4);
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

fn decode<M: Message + Default + serde::de::DeserializeOwned>(
    bytes: &[u8],
    encoding: Encoding,
    what: &'static str,
) -> Result<M, DecodeError> {
    match encoding {
        Encoding::Protobuf => M::decode(bytes).map_err(|e| DecodeError::Invalid(what, e.to_string())),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| DecodeError::Invalid(what, e.to_string())),
    }
}

/// Encodes an OTLP response message in the request's encoding.
pub fn encode<M: Message + serde::Serialize>(message: &M, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// Rows from one trace export, and the OTLP response to send once stored.
pub fn traces(bytes: &[u8], encoding: Encoding) -> Result<(Rows, ExportTraceServiceResponse), DecodeError> {
    let request: ExportTraceServiceRequest = decode(bytes, encoding, "ExportTraceServiceRequest")?;
    let mut rows = Rows::default();
    let mut rejected = 0i64;
    let mut reasons: Vec<String> = Vec::new();
    for resource_spans in request.resource_spans {
        let resource_attrs = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let service = service_name(&resource_attrs);
        for scope in resource_spans.scope_spans {
            for s in scope.spans {
                if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                    rejected += 1;
                    note(&mut reasons, "spans need a 16-byte trace_id and an 8-byte span_id");
                    continue;
                }
                if s.end_time_unix_nano < s.start_time_unix_nano || s.start_time_unix_nano == 0 {
                    rejected += 1;
                    note(&mut reasons, "spans need a start time and an end time not before it");
                    continue;
                }
                let attrs = &s.attributes;
                let is_error = s.status.as_ref().map(|st| st.code == status::StatusCode::Error as i32).unwrap_or(false);
                rows.spans.push(SpanRow {
                    timestamp_us: (s.start_time_unix_nano / 1000) as i64,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex::encode(&s.parent_span_id)),
                    service_name: service.clone(),
                    span_name: clip(s.name.clone(), MAX_SPAN_NAME),
                    span_kind: span_kind(s.kind).into(),
                    duration_ms: (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6,
                    is_error,
                    http_status: int_attr(attrs, &["http.response.status_code", "http.status_code"]),
                    http_method: str_attr(attrs, &["http.request.method", "http.method"]),
                    http_route: str_attr(attrs, &["http.route"]),
                    attributes: attributes_json(attrs),
                });
            }
        }
    }
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: reasons.join("; "),
    });
    Ok((rows, ExportTraceServiceResponse { partial_success }))
}

/// Remembers the last cumulative bucket counts of each histogram series, to
/// store deltas. Bounded: an evicted series restarts from its full count,
/// which over-counts once rather than failing.
pub struct Deltas {
    last: Mutex<HashMap<String, (u64, Vec<u64>)>>,
    max_series: usize,
}

impl Deltas {
    pub fn new(max_series: usize) -> Self {
        Deltas { last: Mutex::new(HashMap::new()), max_series }
    }

    fn delta(&self, series: String, start: u64, counts: &[u64]) -> Vec<u64> {
        let mut last = self.last.lock().expect("deltas lock");
        let delta = match last.get(&series) {
            Some((prev_start, prev)) if *prev_start == start && prev.len() == counts.len() && counts.iter().zip(prev).all(|(c, p)| c >= p) => {
                counts.iter().zip(prev).map(|(c, p)| c - p).collect()
            }
            _ => counts.to_vec(),
        };
        if last.len() >= self.max_series && !last.contains_key(&series) {
            last.clear();
        }
        last.insert(series, (start, counts.to_vec()));
        delta
    }
}

/// Rows from one metrics export, and the OTLP response to send once stored.
pub fn metrics(bytes: &[u8], encoding: Encoding, deltas: &Deltas) -> Result<(Rows, ExportMetricsServiceResponse), DecodeError> {
    let request: ExportMetricsServiceRequest = decode(bytes, encoding, "ExportMetricsServiceRequest")?;
    let mut rows = Rows::default();
    let mut rejected = 0i64;
    let mut reasons: Vec<String> = Vec::new();
    for resource_metrics in request.resource_metrics {
        let resource_attrs = resource_metrics.resource.map(|r| r.attributes).unwrap_or_default();
        let service = service_name(&resource_attrs);
        for scope in resource_metrics.scope_metrics {
            for m in scope.metrics {
                match m.data {
                    Some(metric::Data::Histogram(h)) => {
                        let cumulative = h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                        for point in h.data_points {
                            match histogram_rows(&service, &m.name, &m.unit, &point, cumulative, deltas) {
                                Ok(mut r) => rows.buckets.append(&mut r),
                                Err(reason) => {
                                    rejected += 1;
                                    note(&mut reasons, reason);
                                }
                            }
                        }
                    }
                    Some(metric::Data::Gauge(g)) => {
                        push_numbers(&mut rows, &service, &m.name, &m.unit, "gauge", g.data_points, &mut rejected, &mut reasons)
                    }
                    Some(metric::Data::Sum(s)) => {
                        push_numbers(&mut rows, &service, &m.name, &m.unit, "sum", s.data_points, &mut rejected, &mut reasons)
                    }
                    Some(metric::Data::ExponentialHistogram(e)) => {
                        rejected += e.data_points.len() as i64;
                        note(&mut reasons, "exponential histograms are not stored; export explicit-bucket histograms");
                    }
                    Some(metric::Data::Summary(s)) => {
                        rejected += s.data_points.len() as i64;
                        note(&mut reasons, "summaries are not stored; export histograms");
                    }
                    None => {}
                }
            }
        }
    }
    let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected,
        error_message: reasons.join("; "),
    });
    Ok((rows, ExportMetricsServiceResponse { partial_success }))
}

#[allow(clippy::too_many_arguments)]
fn push_numbers(
    rows: &mut Rows,
    service: &str,
    name: &str,
    unit: &str,
    kind: &str,
    points: Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>,
    rejected: &mut i64,
    reasons: &mut Vec<String>,
) {
    for p in points {
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => {
                *rejected += 1;
                note(reasons, "number data points need a value");
                continue;
            }
        };
        rows.metrics.push(MetricRow {
            timestamp_us: (p.time_unix_nano / 1000) as i64,
            metric_name: name.into(),
            value,
            unit: unit.into(),
            metric_type: kind.into(),
            service_name: Some(service.into()),
            attributes: attributes_json(&p.attributes),
        });
    }
}

fn histogram_rows(
    service: &str,
    name: &str,
    unit: &str,
    point: &HistogramDataPoint,
    cumulative: bool,
    deltas: &Deltas,
) -> Result<Vec<BucketRow>, &'static str> {
    if point.bucket_counts.len() != point.explicit_bounds.len() + 1 {
        return Err("histogram points need one more bucket count than explicit bounds");
    }
    let (scale, unit) = match unit {
        "s" => (1000.0, "ms"),
        "us" | "µs" => (0.001, "ms"),
        "ns" => (0.000_001, "ms"),
        other => (1.0, other),
    };
    let attributes = attributes_json(&point.attributes);
    let counts = if cumulative {
        deltas.delta(format!("{service}\u{0}{name}\u{0}{attributes}"), point.start_time_unix_nano, &point.bucket_counts)
    } else {
        point.bucket_counts.clone()
    };
    let attrs = &point.attributes;
    let mut rows = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let upper = point.explicit_bounds.get(i).map(|b| b * scale).unwrap_or(f64::INFINITY);
        let lower = i.checked_sub(1).map(|j| point.explicit_bounds[j] * scale);
        rows.push(BucketRow {
            timestamp_us: (point.time_unix_nano / 1000) as i64,
            service_name: service.into(),
            metric_name: clip(name.to_string(), MAX_NAME),
            unit: unit.into(),
            http_method: str_attr(attrs, &["http.request.method", "http.method"]),
            http_route: str_attr(attrs, &["http.route"]),
            http_status_code: int_attr(attrs, &["http.response.status_code", "http.status_code"]),
            attributes: attributes.clone(),
            bucket_lower: lower,
            bucket_le: upper,
            count: count.min(i64::MAX as u64) as i64,
        });
    }
    Ok(rows)
}

/// Longest service name, span name or string attribute kept, in bytes.
const MAX_NAME: usize = 256;
const MAX_SPAN_NAME: usize = 1024;
/// Longest attributes JSON kept per row; longer is replaced by a marker.
const MAX_ATTRIBUTES: usize = 16 * 1024;

/// `text` cut to at most `max` bytes on a character boundary.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn note(reasons: &mut Vec<String>, reason: &str) {
    if !reasons.iter().any(|r| r == reason) {
        reasons.push(reason.to_string());
    }
}

fn service_name(resource: &[KeyValue]) -> String {
    clip(str_attr(resource, &["service.name"]).unwrap_or_else(|| "unknown_service".into()), MAX_NAME)
}

fn span_kind(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Unspecified => "UNSPECIFIED",
        span::SpanKind::Internal => "INTERNAL",
        span::SpanKind::Server => "SERVER",
        span::SpanKind::Client => "CLIENT",
        span::SpanKind::Producer => "PRODUCER",
        span::SpanKind::Consumer => "CONSUMER",
    }
}

fn find<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<&'a any_value::Value> {
    keys.iter()
        .find_map(|k| attrs.iter().find(|kv| kv.key == *k))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr(attrs: &[KeyValue], keys: &[&str]) -> Option<String> {
    match find(attrs, keys)? {
        any_value::Value::StringValue(s) => Some(clip(s.clone(), MAX_NAME)),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], keys: &[&str]) -> Option<i32> {
    match find(attrs, keys)? {
        any_value::Value::IntValue(i) => i32::try_from(*i).ok(),
        any_value::Value::StringValue(s) => s.parse().ok(),
        any_value::Value::DoubleValue(d) => Some(*d as i32),
        _ => None,
    }
}

fn attributes_json(attrs: &[KeyValue]) -> String {
    let mut map = Map::new();
    for kv in attrs {
        map.insert(kv.key.clone(), any_to_json(kv.value.as_ref()));
    }
    let text = Value::Object(map).to_string();
    if text.len() > MAX_ATTRIBUTES {
        return format!("{{\"_truncated\":true,\"_bytes\":{}}}", text.len());
    }
    text
}

fn any_to_json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map(Value::Number).unwrap_or(Value::Null),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any_to_json(Some(v))).collect()),
        Some(any_value::Value::KvlistValue(kv)) => {
            Value::Object(kv.values.iter().map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref()))).collect())
        }
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_histograms_become_deltas() {
        let d = Deltas::new(10);
        assert_eq!(d.delta("s".into(), 1, &[1, 2, 0]), vec![1, 2, 0]);
        assert_eq!(d.delta("s".into(), 1, &[3, 2, 5]), vec![2, 0, 5]);
        // A reset (new start time) starts over.
        assert_eq!(d.delta("s".into(), 9, &[1, 0, 0]), vec![1, 0, 0]);
    }

    #[test]
    fn seconds_become_milliseconds_and_empty_buckets_are_skipped() {
        let point = HistogramDataPoint {
            time_unix_nano: 1_000_000_000,
            explicit_bounds: vec![0.005, 0.01, 0.1],
            bucket_counts: vec![0, 3, 0, 2],
            ..Default::default()
        };
        let rows = histogram_rows("svc", "http.server.request.duration", "s", &point, false, &Deltas::new(1)).unwrap();
        let got: Vec<(Option<f64>, f64, i64)> = rows.iter().map(|r| (r.bucket_lower, r.bucket_le, r.count)).collect();
        assert_eq!(got, vec![(Some(5.0), 10.0, 3), (Some(100.0), f64::INFINITY, 2)]);
        assert_eq!(rows[0].unit, "ms");
    }
}
