"""A small Confluent Schema Registry for the tests: a threaded ``http.server`` on loopback that
speaks the registry's real REST endpoints (a no Schema Registry server can be installed here):

- ``GET /schemas/ids/{id}`` -> ``{"schema": "<json text>"}`` (+ ``schemaType``, ``references``
  when not plain Avro); an unknown id is 404 with ``error_code`` 40403, as the real one answers;
- ``POST /subjects/{subject}/versions`` with ``{"schema": ..., "schemaType"?, "references"?}`` ->
  ``{"id": n}``; registering the same schema again returns its id (ids are global);
- ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``;
- optional basic auth (401 with ``error_code`` 40101 otherwise).

``fail`` makes the next GETs answer with the given HTTP status codes. Every request is recorded in ``requests`` as ``(method, path)`` so tests can count fetches.
``encode_wire`` and ``SchemaRegistry.encoder`` build Confluent wire-format Avro messages.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from fastavro import parse_schema, schemaless_writer

try:
    import pytest
except ImportError:  # benchmarks/deserializers.py uses the server without pytest installed
    pytest = None

__all__ = ["SchemaRegistry", "encode_wire", "schema_registry"]


def encode_wire(schema_id: int, parsed_schema, value) -> bytes:
    """Magic byte 0, the 4-byte big-endian schema id, then the schemaless Avro datum."""
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parsed_schema, value)
    return buf.getvalue()


class SchemaRegistry:
    """The server, its state, and a client side for the tests (``register``, ``encoder``)."""

    def __init__(self, username: str | None = None, password: str | None = None):
        self.username, self.password = username, password
        self.schemas: list[dict] = []          # id - 1 -> {"schema", "schemaType", "references"}
        self.subjects: dict[str, list[int]] = {}  # subject -> schema ids, version 1 first
        self.requests: list[tuple[str, str]] = []
        self.fail: list[int] = []  # HTTP status codes to answer the next GETs with, first first
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "SchemaRegistry":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the port: later connections are refused."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()

    def fetches(self, schema_id: int) -> int:
        """How many times ``GET /schemas/ids/{schema_id}`` was asked."""
        return self.requests.count(("GET", f"/schemas/ids/{schema_id}"))

    # -- the client side, over HTTP like any producer ----------------------------------------

    def register(self, subject: str, schema, schema_type: str | None = None,
                 references: list | None = None) -> int:
        """Register ``schema`` (JSON text or a JSON value) under ``subject`` through the REST
        API, as a producer's serializer does; returns its id."""
        body = {"schema": schema if isinstance(schema, str) else json.dumps(schema)}
        if schema_type:
            body["schemaType"] = schema_type
        if references:
            body["references"] = references
        req = urllib.request.Request(f"{self.url}/subjects/{subject}/versions", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json",
                                              **self._auth_header()})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["id"]

    def encoder(self, subject: str, schema):
        """Register ``schema``; returns ``encode(value) -> bytes`` in Confluent wire format."""
        schema_id = self.register(subject, schema)
        parsed = parse_schema(schema)
        return lambda value: encode_wire(schema_id, parsed, value)

    def _auth_header(self) -> dict:
        if self.username is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def _handler(reg: SchemaRegistry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, body, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, error_code: int, message: str) -> None:
            self._send(code, {"error_code": error_code, "message": message})

        def _authorized(self) -> bool:
            if reg.username is None:
                return True
            if self.headers.get("Authorization") == reg._auth_header()["Authorization"]:
                return True
            self._send(401, {"error_code": 40101, "message": "Unauthorized"},
                       {"WWW-Authenticate": 'Basic realm="SchemaRegistry"'})
            return False

        def do_GET(self) -> None:
            with reg.lock:
                reg.requests.append(("GET", self.path))
            if not self._authorized():
                return
            with reg.lock:
                status = reg.fail.pop(0) if reg.fail else None
            if status is not None:
                return self._error(status, status * 100 + 1, f"failing on purpose with {status}")
            parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
            with reg.lock:
                if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                    sid = int(parts[2])
                    if not 1 <= sid <= len(reg.schemas):
                        return self._error(404, 40403, f"Schema {sid} not found")
                    return self._send(200, _public(reg.schemas[sid - 1]))
                if parts == ["subjects"]:
                    return self._send(200, sorted(reg.subjects))
                if len(parts) >= 3 and parts[0] == "subjects" and parts[2] == "versions":
                    ids = reg.subjects.get(parts[1])
                    if ids is None:
                        return self._error(404, 40401, f"Subject '{parts[1]}' not found.")
                    if len(parts) == 3:
                        return self._send(200, list(range(1, len(ids) + 1)))
                    if len(parts) == 4:
                        v = parts[3]
                        version = len(ids) if v in ("latest", "-1") else int(v) if v.isdigit() else 0
                        if not 1 <= version <= len(ids):
                            return self._error(404, 40402, f"Version {v} not found.")
                        sid = ids[version - 1]
                        return self._send(200, {"subject": parts[1], "version": version, "id": sid,
                                                **_public(reg.schemas[sid - 1])})
            self._error(404, 404, "HTTP 404 Not Found")

        def do_POST(self) -> None:
            with reg.lock:
                reg.requests.append(("POST", self.path))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            parts = [unquote(p) for p in self.path.strip("/").split("/")]
            if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
                return self._error(404, 404, "HTTP 404 Not Found")
            try:
                body = json.loads(raw)
                entry = {"schema": body["schema"], "schemaType": body.get("schemaType", "AVRO"),
                         "references": body.get("references") or []}
                if entry["schemaType"] == "AVRO":
                    json.loads(entry["schema"])
            except (ValueError, KeyError, TypeError):
                return self._error(422, 42201, "Invalid schema")
            with reg.lock:
                # Ids are global: the same schema under any subject keeps its id.
                key = _canonical(entry)
                sid = next((i + 1 for i, e in enumerate(reg.schemas) if _canonical(e) == key), None)
                if sid is None:
                    reg.schemas.append(entry)
                    sid = len(reg.schemas)
                versions = reg.subjects.setdefault(parts[1], [])
                if sid not in versions:
                    versions.append(sid)
            self._send(200, {"id": sid})

    return Handler


def _canonical(entry: dict) -> tuple:
    text = entry["schema"]
    try:
        text = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        pass
    return (entry["schemaType"], text, json.dumps(entry["references"], sort_keys=True))


def _public(entry: dict) -> dict:
    out = {"schema": entry["schema"]}
    if entry["schemaType"] != "AVRO":
        out["schemaType"] = entry["schemaType"]
    if entry["references"]:
        out["references"] = entry["references"]
    return out


def _schema_registry():
    """A fresh registry on a loopback port, without auth; stopped after the test."""
    with SchemaRegistry() as reg:
        yield reg


schema_registry = pytest.fixture(_schema_registry, name="schema_registry") if pytest else None
