//! The live database's tables, created on first start and migrated
//! idempotently after: every statement here may run again on every start.
//!
//! Column names follow the seed SDK server's schema so queries written for
//! it run unchanged. Histograms are stored one row per non-empty bucket with
//! its upper bound (`+inf` for the overflow bucket) and a non-cumulative
//! count, plus the bucket's lower bound (the previous explicit bound, NULL
//! for the first bucket) so that omitting empty buckets loses nothing a
//! percentile needs; `beyla_http_metrics_local` is a view with the seed's column names
//! over the HTTP server duration histograms.

/// The schema version this build writes; recorded in `duckgate_schema`.
pub const VERSION: i32 = 1;

/// Tables and the columns the retention job ages out by.
pub const RETAINED: &[(&str, &str)] = &[
    ("otel_spans_local", "timestamp"),
    ("histogram_buckets_local", "timestamp"),
    ("system_metrics_local", "timestamp"),
    ("events_local", "timestamp"),
];

pub const MIGRATIONS: &str = r#"
CREATE TABLE IF NOT EXISTS duckgate_schema (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL);

CREATE TABLE IF NOT EXISTS otel_spans_local (
    timestamp      TIMESTAMP NOT NULL,
    trace_id       VARCHAR NOT NULL,
    span_id        VARCHAR NOT NULL,
    parent_span_id VARCHAR,
    service_name   VARCHAR NOT NULL,
    span_name      VARCHAR,
    span_kind      VARCHAR,
    duration_ms    DOUBLE NOT NULL,
    is_error       BOOLEAN NOT NULL,
    http_status    INTEGER,
    http_method    VARCHAR,
    http_route     VARCHAR,
    attributes     JSON
);

CREATE TABLE IF NOT EXISTS histogram_buckets_local (
    timestamp        TIMESTAMP NOT NULL,
    service_name     VARCHAR NOT NULL,
    metric_name      VARCHAR NOT NULL,
    unit             VARCHAR,
    http_method      VARCHAR,
    http_route       VARCHAR,
    http_status_code INTEGER,
    attributes       JSON,
    bucket_lower     DOUBLE,
    bucket_le        DOUBLE NOT NULL,
    count            BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS system_metrics_local (
    timestamp    TIMESTAMP NOT NULL,
    metric_name  VARCHAR NOT NULL,
    value        DOUBLE NOT NULL,
    unit         VARCHAR,
    metric_type  VARCHAR,
    service_name VARCHAR,
    attributes   JSON
);

CREATE SEQUENCE IF NOT EXISTS events_id_seq START 1;

CREATE TABLE IF NOT EXISTS events_local (
    id        BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
    timestamp TIMESTAMP NOT NULL,
    name      VARCHAR NOT NULL,
    severity  VARCHAR NOT NULL,
    source    VARCHAR NOT NULL,
    data      JSON
);

CREATE SEQUENCE IF NOT EXISTS alerts_id_seq START 1;

CREATE TABLE IF NOT EXISTS alerts_local (
    id         BIGINT PRIMARY KEY DEFAULT nextval('alerts_id_seq'),
    plugin     VARCHAR NOT NULL,
    name       VARCHAR NOT NULL,
    severity   VARCHAR NOT NULL,
    message    VARCHAR NOT NULL,
    data       JSON,
    dedup_key  VARCHAR,
    first_seen TIMESTAMP NOT NULL,
    last_seen  TIMESTAMP NOT NULL,
    count      BIGINT NOT NULL,
    acked_at   TIMESTAMP
);

CREATE OR REPLACE VIEW beyla_http_metrics_local AS
SELECT
    timestamp,
    service_name,
    http_method,
    http_route,
    http_status_code,
    bucket_le AS latency_bucket_ms,
    count,
    metric_name,
    attributes
FROM histogram_buckets_local
WHERE metric_name IN ('http.server.request.duration', 'http.server.duration');
"#;
