"""An S3 server for tests and benchmarks: moto's, over HTTP on a loopback port (``kpipe[test]``).

    with MotoServer() as server:       # sets dummy AWS credentials in os.environ meanwhile
        spec["sink"]["endpoint_url"] = server.url
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from kpipe.broker import free_port

__all__ = ["MotoServer", "CREDENTIALS"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "kpipe-test", "AWS_SECRET_ACCESS_KEY": "kpipe-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """``python -m moto.server`` on a free loopback port, from ``start()`` to ``stop()``.

    boto3 finds the dummy ``CREDENTIALS`` (moto accepts any) in ``os.environ`` while it runs, and
    so do ``kpipe run`` subprocesses started meanwhile.
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._saved: dict = {}

    def start(self, timeout: float = 30.0) -> "MotoServer":
        self._saved = {k: os.environ.get(k) for k in CREDENTIALS}
        os.environ.update(CREDENTIALS)
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the moto server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the moto server did not come up in {timeout}s")
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # SIGTERM ignored: no choice left
                proc.kill()
                proc.wait(10)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved = {}

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
