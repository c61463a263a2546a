"""A real HTTP receiver for the tests: http.server on 127.0.0.1 in a thread.

It records every request (headers and decoded records), stores the records of each 2xx request
in ``accepted``, and fails on demand: ``fail_next`` (a queue of statuses for the next requests),
``reject`` (a predicate on a record: a request holding one answers 400), or ``down()`` (the
listening socket closed, so connections are refused, until ``up()``).
"""
from __future__ import annotations

import gzip
import http.server
import json
import threading
from contextlib import contextmanager


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []   # every request: {"headers", "records", "status"}
        self.accepted: list = []          # the records of every 2xx request, in order
        self.fail_next: list = []         # statuses (or (status, headers)) for the next requests
        self.reject = None                # record -> bool: such a record makes its request a 400
        self.status_for_reject = 400
        self.lock = threading.Lock()
        self.server = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("Content-Type") == "application/x-ndjson":
                    records = [json.loads(line) for line in body.splitlines() if line]
                else:
                    records = json.loads(body)["records"]
                status, extra = 200, {}
                with receiver.lock:
                    if receiver.fail_next:
                        status = receiver.fail_next.pop(0)
                        if isinstance(status, tuple):
                            status, extra = status
                    elif receiver.reject is not None and any(receiver.reject(r) for r in records):
                        status = receiver.status_for_reject
                    receiver.requests.append({"headers": dict(self.headers), "records": records,
                                              "status": status, "path": self.path})
                    if 200 <= status < 300:
                        receiver.accepted.extend(records)
                payload = b'{"ok":true}' if status < 300 else f'{{"error":"status {status}"}}'.encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @contextmanager
    def outage(self):
        self.down()
        try:
            yield
        finally:
            self.up()

    def close(self) -> None:
        self.down()
