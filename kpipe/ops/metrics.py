"""Prometheus metrics read from the run's live figures at scrape time, and the HTTP endpoint
that serves them with ``/healthz`` and ``/readyz``. Every name is in docs/metrics.md.

The collector keeps no state of its own: each scrape reads ``Runner.result``. The runner's
threads write those figures while we read; each dict is copied in one step (atomic under the
GIL), and a figure one update old is fine for a scrape.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kpipe.ops.health import Health

__all__ = ["RunCollector", "MetricsServer", "make_registry"]

log = logging.getLogger("kpipe.ops")

PHASES = ("starting", "running", "stopping", "done")


class RunCollector(Collector):
    def __init__(self, runner, health: Health):
        self.runner = runner
        self.health = health
        self.name = runner.spec.name

    def collect(self):
        r = self.runner.result
        spec = self.runner.spec
        p = [self.name]

        def counter(name, doc, value):
            m = CounterMetricFamily(name, doc, labels=["pipeline"])
            m.add_metric(p, value)
            return m

        def gauge(name, doc, value, unit=""):
            m = GaugeMetricFamily(name, doc, labels=["pipeline"], unit=unit)
            m.add_metric(p, value)
            return m

        info = GaugeMetricFamily("kpipe_pipeline_info", "The pipeline's group, sink and topics (always 1).",
                                 labels=["pipeline", "group", "sink", "topics"])
        info.add_metric([self.name, spec.group, spec.sink_type, ",".join(spec.topics)], 1)
        yield info
        yield counter("kpipe_messages_consumed_total", "Messages consumed from Kafka.", r.consumed)
        yield counter("kpipe_messages_written_total", "Records written durably by the sink.", r.written)
        yield counter("kpipe_batches_written_total", "Batches written durably by the sink.", r.batches)
        yield counter("kpipe_records_filtered_total",
                      "Records dropped on purpose: filtered by a transform, or skipped tombstones.", r.dropped)
        yield counter("kpipe_records_skipped_total", "Bad records let go under the 'skip' policy.", r.skipped)
        yield counter("kpipe_records_dead_lettered_total", "Bad records sent to the dead-letter topic.",
                      r.dead_lettered)
        bad = CounterMetricFamily("kpipe_bad_records_total", "Bad records by stage and the policy applied.",
                                  labels=["pipeline", "stage", "policy"])
        for (stage, policy), n in sorted(dict(r.rejected).items()):
            bad.add_metric([self.name, stage, policy], n)
        yield bad
        for name, doc, hist in (
                ("kpipe_batch_records", "Records per batch written.", r.batch_records),
                ("kpipe_sink_write_seconds", "Duration of successful sink writes.", r.write_seconds),
                ("kpipe_commit_seconds", "Duration of successful Kafka offset commits.", r.commit_seconds)):
            cumulative = hist.cumulative()
            m = HistogramMetricFamily(name, doc, labels=["pipeline"])
            # The +Inf bucket is the count; the sum may trail it by one observation.
            m.add_metric(p, [(floatToGoString(b), n) for b, n in cumulative], sum_value=hist.sum)
            yield m

        assigned = sorted(r.assigned)
        positions, committed, ends, targets = dict(r.positions), dict(r.committed), dict(r.ends), dict(r.targets)
        lag = r.lag()
        per_partition = (
            ("kpipe_partition_lag", "End offset minus committed offset of an assigned partition.", lag),
            ("kpipe_partition_position_offset", "Next offset to consume from an assigned partition.", positions),
            ("kpipe_partition_committed_offset", "Committed next offset of an assigned partition.", committed),
            ("kpipe_partition_end_offset", "End offset (high watermark) of an assigned partition.", ends),
            ("kpipe_partition_target_offset", "--until-caught-up: the end offset to reach.", targets),
        )
        for name, doc, values in per_partition:
            m = GaugeMetricFamily(name, doc, labels=["pipeline", "topic", "partition"])
            for tp in assigned:
                value = values.get(tp)
                if value is not None:
                    m.add_metric([self.name, tp[0], str(tp[1])], value)
            yield m
        yield gauge("kpipe_partitions_assigned", "Partitions this member holds.", len(assigned))
        yield gauge("kpipe_sink_up", "1 while the sink is open and its last write succeeded.", 1 if r.sink_ok else 0)
        yield gauge("kpipe_last_loop_age_seconds",
                    "Seconds since the consumer loop last turned (since the start, before its first turn).",
                    max(0.0, self.health.loop_age()))
        yield gauge("kpipe_healthy", "1 while /healthz answers 200.", 1 if self.health.alive()[0] else 0)
        yield gauge("kpipe_ready", "1 while /readyz answers 200.", 1 if self.health.ready()[0] else 0)
        phase = GaugeMetricFamily("kpipe_phase", "1 for the run's current phase.", labels=["pipeline", "phase"])
        for name in PHASES:
            phase.add_metric([self.name, name], 1 if r.phase == name else 0)
        yield phase


def make_registry(runner, health: Health) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(runner, health))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, on a daemon thread."""

    def __init__(self, runner, health: Health, host: str, port: int):
        registry = make_registry(runner, health)

        class Handler(BaseHTTPRequestHandler):
            server_version = "kpipe"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept"))
                    self._reply(200, encoder(registry), content_type)
                elif path in ("/healthz", "/readyz"):
                    ok, why = health.alive() if path == "/healthz" else health.ready()
                    self._reply(200 if ok else 503, (why + "\n").encode())
                elif path == "/":
                    self._reply(200, b"kpipe: /metrics /healthz /readyz\n")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):  # scrapes every few seconds: not worth an INFO line
                log.debug("metrics %s: " + fmt, self.client_address[0], *args)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        self.httpd = server_class((host, port), Handler)  # raises OSError: in use, no such address
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                       name="kpipe-metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        where = f"[{self.host}]" if ":" in self.host else self.host
        log.info("serving metrics on http://%s:%d/metrics (and /healthz, /readyz)", where, self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
