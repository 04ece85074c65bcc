//! Percentile and error-rate lookups over live telemetry, behind a moka cache.
//!
//! The seed's percentile SQL ignored histogram counts (treating each bucket
//! row as one observation) and named a column that does not exist. Here a
//! histogram percentile is count-weighted with linear interpolation inside
//! the bucket, exactly Prometheus' `histogram_quantile`, and a span
//! percentile is DuckDB's exact `quantile_cont` over the durations.
//!
//! Lookups are cached for a short TTL keyed by every input: a hot alert
//! asking the same question every second costs one DuckDB query per TTL, and
//! a hit never touches DuckDB.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use duckdb::types::Value as DuckValue;
use serde::Serialize;

use super::pool::{Read, ReadError, ReadPool, INTERNAL_MAX_BYTES};

/// Metric names answered from span durations when no histogram of that name exists.
pub const SPAN_METRICS: &[&str] = &["duration", "span.duration", "http.server.duration", "http.server.request.duration"];

/// Histogram metrics that describe HTTP server latency (the `beyla_http_metrics_local` view).
pub const HTTP_SERVER_HISTOGRAMS: &[&str] = &["http.server.request.duration", "http.server.duration"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentile {
    pub value: Option<f64>,
    pub unit: &'static str,
    pub count: u64,
    pub window_ms: u64,
    pub source: &'static str,
    /// When the value was computed (epoch ms); a cached answer keeps its time.
    pub timestamp: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorRate {
    pub value: Option<f64>,
    pub errors: u64,
    pub total: u64,
    pub window_ms: u64,
    pub source: &'static str,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Key {
    Percentile { service: String, metric: String, p_bits: u64, window_ms: u64 },
    ErrorRate { service: String, window_ms: u64 },
}

#[derive(Debug, Clone)]
enum Cached {
    Percentile(Percentile),
    ErrorRate(ErrorRate),
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub ttl_ms: u64,
}

pub struct Lookups {
    pool: Arc<ReadPool>,
    cache: moka::future::Cache<Key, Cached>,
    ttl: Duration,
    timeout: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Lookups {
    pub fn new(pool: Arc<ReadPool>, ttl: Duration, max_entries: u64, timeout: Duration) -> Self {
        Lookups {
            pool,
            cache: moka::future::Cache::builder().max_capacity(max_entries).time_to_live(ttl.max(Duration::from_millis(1))).build(),
            ttl,
            timeout,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }

    /// `p` in (0, 1]; the caller validates it.
    pub async fn percentile(&self, service: &str, metric: &str, p: f64, window_ms: u64) -> Result<(Percentile, bool), ReadError> {
        let key = Key::Percentile { service: service.to_string(), metric: metric.to_string(), p_bits: p.to_bits(), window_ms };
        let (cached, hit) = self
            .cached(key, async { self.compute_percentile(service, metric, p, window_ms).await.map(Cached::Percentile) })
            .await?;
        match cached {
            Cached::Percentile(v) => Ok((v, hit)),
            Cached::ErrorRate(_) => unreachable!("keys are typed"),
        }
    }

    pub async fn error_rate(&self, service: &str, window_ms: u64) -> Result<(ErrorRate, bool), ReadError> {
        let key = Key::ErrorRate { service: service.to_string(), window_ms };
        let (cached, hit) = self
            .cached(key, async { self.compute_error_rate(service, window_ms).await.map(Cached::ErrorRate) })
            .await?;
        match cached {
            Cached::ErrorRate(v) => Ok((v, hit)),
            Cached::Percentile(_) => unreachable!("keys are typed"),
        }
    }

    async fn cached(
        &self,
        key: Key,
        compute: impl std::future::Future<Output = Result<Cached, ReadError>>,
    ) -> Result<(Cached, bool), ReadError> {
        if let Some(v) = self.cache.get(&key).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((v, true));
        }
        let mut computed_here = false;
        let value = self
            .cache
            .try_get_with(key, async {
                computed_here = true;
                compute.await
            })
            .await
            .map_err(|e: Arc<ReadError>| match e.as_ref() {
                ReadError::Timeout(d) => ReadError::Timeout(*d),
                ReadError::Sql(m) => ReadError::Sql(m.clone()),
                other => ReadError::Internal(other.to_string()),
            })?;
        if computed_here {
            self.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok((value, !computed_here))
    }

    async fn read(&self, sql: &str, params: Vec<DuckValue>) -> Result<Vec<arrow::array::RecordBatch>, ReadError> {
        let result = self
            .pool
            .read(Read { sql: sql.into(), params, max_rows: 100_000, max_bytes: INTERNAL_MAX_BYTES, timeout: self.timeout, trusted: true })
            .await?;
        if result.truncated {
            return Err(ReadError::Internal("a lookup read more than 100,000 rows; narrow the window".into()));
        }
        Ok(result.batches)
    }

    async fn compute_percentile(&self, service: &str, metric: &str, p: f64, window_ms: u64) -> Result<Percentile, ReadError> {
        let now = chrono::Utc::now();
        let cutoff = cutoff_us(now, window_ms);
        let buckets = self
            .read(
                "SELECT bucket_lower, bucket_le, sum(count)::BIGINT FROM histogram_buckets_local \
                 WHERE service_name = ? AND metric_name = ? AND timestamp >= make_timestamp(?::BIGINT) \
                 GROUP BY bucket_lower, bucket_le ORDER BY bucket_le, bucket_lower",
                vec![DuckValue::Text(service.to_string()), DuckValue::Text(metric.to_string()), cutoff.into()],
            )
            .await?;
        let mut pairs = Vec::new();
        for batch in &buckets {
            let lower = batch.column(0).as_primitive::<Float64Type>();
            let le = batch.column(1).as_primitive::<Float64Type>();
            let count = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let lower = (!lower.is_null(i)).then(|| lower.value(i));
                pairs.push(Bucket { lower, upper: le.value(i), count: count.value(i).max(0) as u64 });
            }
        }
        if !pairs.is_empty() || !SPAN_METRICS.contains(&metric) {
            let count = pairs.iter().map(|b| b.count).sum();
            return Ok(Percentile {
                value: histogram_quantile(p, &pairs),
                unit: "ms",
                count,
                window_ms,
                source: "histogram",
                timestamp: now.timestamp_millis(),
            });
        }
        let spans = self
            .read(
                "SELECT quantile_cont(duration_ms, ?::DOUBLE), count(*)::BIGINT FROM otel_spans_local \
                 WHERE service_name = ? AND timestamp >= make_timestamp(?::BIGINT)",
                vec![p.into(), DuckValue::Text(service.to_string()), cutoff.into()],
            )
            .await?;
        let (value, count) = spans
            .first()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let v = b.column(0).as_primitive::<Float64Type>();
                let c = b.column(1).as_primitive::<Int64Type>();
                ((!v.is_null(0)).then(|| v.value(0)), c.value(0).max(0) as u64)
            })
            .unwrap_or((None, 0));
        Ok(Percentile { value, unit: "ms", count, window_ms, source: "spans", timestamp: now.timestamp_millis() })
    }

    async fn compute_error_rate(&self, service: &str, window_ms: u64) -> Result<ErrorRate, ReadError> {
        let now = chrono::Utc::now();
        let cutoff = cutoff_us(now, window_ms);
        let counts = |batches: Vec<arrow::array::RecordBatch>| -> (u64, u64) {
            batches
                .first()
                .filter(|b| b.num_rows() > 0)
                .map(|b| {
                    let e = b.column(0).as_primitive::<Int64Type>();
                    let t = b.column(1).as_primitive::<Int64Type>();
                    let get = |a: &arrow::array::PrimitiveArray<Int64Type>| if a.is_null(0) { 0 } else { a.value(0).max(0) as u64 };
                    (get(e), get(t))
                })
                .unwrap_or((0, 0))
        };
        let (errors, total) = counts(
            self.read(
                "SELECT count(*) FILTER (WHERE is_error)::BIGINT, count(*)::BIGINT FROM otel_spans_local \
                 WHERE service_name = ? AND timestamp >= make_timestamp(?::BIGINT)",
                vec![DuckValue::Text(service.to_string()), cutoff.into()],
            )
            .await?,
        );
        let rate = |errors: u64, total: u64| (total > 0).then(|| errors as f64 / total as f64);
        if total > 0 {
            return Ok(ErrorRate { value: rate(errors, total), errors, total, window_ms, source: "spans", timestamp: now.timestamp_millis() });
        }
        let (errors, total) = counts(
            self.read(
                "SELECT (sum(count) FILTER (WHERE http_status_code >= 500))::BIGINT, sum(count)::BIGINT \
                 FROM histogram_buckets_local \
                 WHERE service_name = ? AND metric_name IN ('http.server.request.duration', 'http.server.duration') \
                 AND timestamp >= make_timestamp(?::BIGINT)",
                vec![DuckValue::Text(service.to_string()), cutoff.into()],
            )
            .await?,
        );
        let source = if total > 0 { "histogram" } else { "spans" };
        Ok(ErrorRate { value: rate(errors, total), errors, total, window_ms, source, timestamp: now.timestamp_millis() })
    }
}

/// Longest window a lookup may ask for (ten years, far beyond any retention).
pub const MAX_WINDOW_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Microseconds since the epoch at the start of the window ending `now`.
pub fn cutoff_us(now: chrono::DateTime<chrono::Utc>, window_ms: u64) -> i64 {
    now.timestamp_micros() - window_ms.min(MAX_WINDOW_MS) as i64 * 1000
}

/// One stored bucket: (lower, upper] with its count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// `None` for the first bucket of a histogram: (-inf, upper].
    pub lower: Option<f64>,
    pub upper: f64,
    pub count: u64,
}

/// Prometheus' `histogram_quantile` over non-cumulative buckets sorted by
/// upper bound: find the bucket holding rank `p * total` and interpolate
/// linearly between its lower and upper bound. The first bucket's lower
/// bound is 0 (or its upper bound if that is not positive); a rank in the
/// `+inf` bucket answers that bucket's lower bound, the highest finite one.
pub fn histogram_quantile(p: f64, buckets: &[Bucket]) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    if total == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let rank = p * total as f64;
    let mut cumulative = 0u64;
    for b in buckets.iter().filter(|b| b.count > 0) {
        let before = cumulative;
        cumulative += b.count;
        if (cumulative as f64) < rank {
            continue;
        }
        let lower = b.lower.unwrap_or(if b.upper > 0.0 { 0.0 } else { b.upper });
        if b.upper.is_infinite() {
            return b.lower;
        }
        return Some(lower + (b.upper - lower) * ((rank - before as f64) / b.count as f64));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(lower: Option<f64>, upper: f64, count: u64) -> Bucket {
        Bucket { lower, upper, count }
    }

    #[test]
    fn interpolates_inside_the_bucket_weighted_by_count() {
        // 10 in (0,10], 30 in (10,50], 60 in (50,100]: rank 90 of 100 falls in
        // the third bucket, 50 of its 60 => 50 + 50 * 50/60.
        let h = [b(None, 10.0, 10), b(Some(10.0), 50.0, 30), b(Some(50.0), 100.0, 60)];
        let got = histogram_quantile(0.9, &h).unwrap();
        assert!((got - (50.0 + 50.0 * 50.0 / 60.0)).abs() < 1e-9, "{got}");
        assert_eq!(histogram_quantile(0.05, &h), Some(5.0));
        assert_eq!(histogram_quantile(1.0, &h), Some(100.0));
    }

    #[test]
    fn overflow_bucket_answers_the_highest_finite_bound() {
        let h = [b(None, 10.0, 1), b(Some(10.0), f64::INFINITY, 9)];
        assert_eq!(histogram_quantile(0.99, &h), Some(10.0));
        assert_eq!(histogram_quantile(0.5, &[]), None);
    }

    #[test]
    fn omitted_empty_buckets_keep_their_bounds() {
        // Bounds 1, 5, 20 with nothing in (1,5]: the (5,20] bucket starts at 5.
        let h = [b(None, 1.0, 4), b(Some(5.0), 20.0, 4)];
        assert_eq!(histogram_quantile(0.75, &h), Some(5.0 + 15.0 * 0.5));
    }
}
