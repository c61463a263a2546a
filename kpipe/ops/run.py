"""``kpipe run``'s operational side, around ``Runner.run``: the metrics and health endpoint,
systemd notifications, and a start-up line with the effective settings (secrets masked).

    with run_ops(args, runner):
        result = runner.run()

Problems starting them (prometheus-client missing, the port taken) print one line and raise
``SystemExit(1)`` before anything connects.
"""
from __future__ import annotations

import contextlib
import logging
import sys

from kpipe.ops.health import Health
from kpipe.ops.logs import tag_pipeline

__all__ = ["run_ops"]

log = logging.getLogger("kpipe.ops")


@contextlib.contextmanager
def run_ops(args, runner):
    spec = runner.spec
    tag_pipeline(spec.name)
    health = Health(runner, getattr(args, "health_stall", None))
    server = notifier = None
    port = getattr(args, "metrics_port", None)
    if port is not None:
        try:
            from kpipe.ops.metrics import MetricsServer
        except ImportError:
            print('kpipe: --metrics-port needs prometheus-client; run: pip install "kpipe[metrics]"',
                  file=sys.stderr)
            raise SystemExit(1) from None
        host = getattr(args, "metrics_host", None) or "0.0.0.0"
        try:
            server = MetricsServer(runner, health, host, port)
        except OSError as exc:
            print(f"kpipe: cannot serve metrics on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(1) from None
    log.info("pipeline %s: group %s, topics %s -> sink %s %s", spec.name, spec.group, ",".join(spec.topics),
             spec.sink_type, _settings(spec.sink_config))
    from kpipe.ops.systemd import SystemdNotifier

    try:
        if server is not None:
            server.start()
        notifier = SystemdNotifier.from_env(runner, health)
        if notifier is not None:
            notifier.start()
        yield health
    finally:
        if notifier is not None:
            notifier.close()
        if server is not None:
            server.close()


def _settings(config: dict) -> str:
    """``key=value`` pairs; secrets are masked by the log filter (``kpipe.ops.redact``)."""
    return " ".join(f"{k}={v}" for k, v in config.items() if isinstance(v, (str, int, float)))
