"""Sends generated telemetry to an OTLP/HTTP endpoint with the real
OpenTelemetry Python SDK and exporters, and writes what it generated as JSON
so a test can compute the expected answers independently.

    python3 send.py --endpoint http://127.0.0.1:3214 --out generated.json \
        [--services 3] [--spans 200] [--seed 7] [--gzip]
"""
import argparse
import json
import random
import time

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
HISTOGRAM = "http.server.request.duration"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--services", type=int, default=3)
    ap.add_argument("--spans", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--gzip", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    compression = Compression.Gzip if args.gzip else Compression.NoCompression
    now_ns = time.time_ns()
    generated = {"spans": [], "histograms": [], "boundaries_s": BOUNDARIES_S}

    for s in range(args.services):
        service = f"svc-{s}"
        resource = Resource.create({"service.name": service})

        # Spans with chosen start and end times, some failing, using both the
        # current and the old HTTP semantic-convention attribute names.
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{args.endpoint}/v1/traces", compression=compression)))
        tracer = provider.get_tracer("duckgate-test")
        for i in range(args.spans):
            duration_ms = round(rng.lognormvariate(3.0 + s * 0.5, 0.6), 3)
            start = now_ns - rng.randint(1, 60_000) * 1_000_000
            failed = rng.random() < 0.1 * (s + 1)
            status_code = 500 if failed else 200
            attrs = ({"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": status_code}
                     if i % 2 == 0 else
                     {"http.method": "POST", "http.route": "/items", "http.status_code": status_code})
            span = tracer.start_span("request", kind=SpanKind.SERVER, start_time=start, attributes=attrs)
            if failed:
                span.set_status(Status(StatusCode.ERROR, "boom"))
            span.end(end_time=start + int(duration_ms * 1_000_000))
            generated["spans"].append({"service": service, "duration_ms": duration_ms, "is_error": failed,
                                       "http_status": status_code})
        provider.shutdown()

        # A latency histogram in seconds, exported twice with the SDK's default
        # cumulative temporality: the second export repeats the first's counts.
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{args.endpoint}/v1/metrics", compression=compression),
            export_interval_millis=3_600_000)
        meters = MeterProvider(resource=resource, metric_readers=[reader], views=[
            View(instrument_name=HISTOGRAM, aggregation=ExplicitBucketHistogramAggregation(boundaries=BOUNDARIES_S))])
        histogram = meters.get_meter("duckgate-test").create_histogram(HISTOGRAM, unit="s")
        gauge_value = 40.0 + s
        meters.get_meter("duckgate-test").create_observable_gauge(
            "app.queue.depth", callbacks=[lambda _options, v=gauge_value: [__import__("opentelemetry.metrics", fromlist=["Observation"]).Observation(v)]])
        for round_no in range(2):
            for _ in range(args.spans // 2):
                value_s = rng.lognormvariate(-3.0 + s * 0.7, 0.8)
                status_code = 500 if rng.random() < 0.05 * (s + 1) else 200
                histogram.record(value_s, {"http.request.method": "GET", "http.route": "/h", "http.response.status_code": status_code})
                generated["histograms"].append({"service": service, "value_s": value_s, "http_status": status_code})
            meters.force_flush()
        meters.shutdown()
        generated.setdefault("gauges", []).append({"service": service, "name": "app.queue.depth", "value": gauge_value})

    with open(args.out, "w") as f:
        json.dump(generated, f)


if __name__ == "__main__":
    main()
