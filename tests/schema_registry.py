"""A small Confluent Schema Registry for the tests: a threaded ``http.server`` on loopback that
speaks the registry's REST API as Confluent's own clients use it (no Schema Registry server can
be installed here). Every route takes its query string apart and honours the parameters the
real registry does (``normalize``, ``deleted``, ``permanent``, ``subjectPrefix``, and ``format``
for Protobuf); the others (``subject``, ``fetchMaxId``...) are accepted and change nothing here.

Protobuf schemas are kept in both of the real registry's forms: ``.proto`` text, which every GET
answers by default, and the base64 ``FileDescriptorProto`` that ``format=serialized`` asks for.
A schema registered in one form (Confluent's ProtobufSerializer registers the serialized one)
gets the other: text is compiled with protoc (its references' text alongside), a descriptor is
printed as text (``protokit.proto_text``). ``SchemaRegistry(serialized_format=False)`` ignores
``format``, as older registries do.

- ``GET /schemas/ids/{id}`` -> ``{"schema": "<json text>"}`` (+ ``schemaType``, ``references``
  when not plain Avro); an unknown id is 404 with ``error_code`` 40403, as the real one answers;
  ``GET /schemas/ids/{id}/subjects``, ``/schemas/ids/{id}/versions``, ``GET /schemas/types``;
- ``POST /subjects/{subject}/versions`` (register) -> ``{"id": n}``; the same schema again
  returns its id (ids are global); ``normalize=true`` stores and compares the normalized form;
- ``POST /subjects/{subject}`` (look a schema up) -> ``{"subject", "id", "version", "schema"}``,
  404 with 40401 (no such subject) or 40403 (schema not under it); ``deleted=true`` finds
  soft-deleted versions too;
- ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}`` (``deleted=true``: soft-deleted ones too);
- ``DELETE /subjects/{subject}`` and ``DELETE /subjects/{subject}/versions/{version}``: soft,
  then ``permanent=true``, as the real one insists;
- optional basic auth (401 with ``error_code`` 40101 otherwise).

Like a registry whose subjects are all at compatibility NONE, it checks no compatibility
between versions. Unknown routes (the serializer's ``GET /associations/...`` among them) are a
404 with ``error_code`` 404, as a registry without that feature answers.

``fail`` makes the next GETs answer with the given HTTP status codes. Every request is recorded
in ``requests`` as ``(method, path with its query)`` so tests can count fetches.
``encode_wire`` and ``SchemaRegistry.encoder`` build Confluent wire-format Avro messages.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from fastavro import parse_schema, schemaless_writer

try:
    import pytest
except ImportError:  # benchmarks/deserializers.py uses the server without pytest installed
    pytest = None

__all__ = ["SchemaRegistry", "encode_wire", "schema_registry"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def encode_wire(schema_id: int, parsed_schema, value) -> bytes:
    """Magic byte 0, the 4-byte big-endian schema id, then the schemaless Avro datum."""
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parsed_schema, value)
    return buf.getvalue()


class _Answer(Exception):
    """An error answer: HTTP status, the registry's error_code, its message."""

    def __init__(self, status: int, error_code: int, message: str):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


class SchemaRegistry:
    """The server, its state, and a client side for the tests (``register``, ``encoder``)."""

    def __init__(self, username: str | None = None, password: str | None = None,
                 serialized_format: bool = True):
        self.username, self.password = username, password
        self.serialized_format = serialized_format
        self.schemas: list[dict] = []          # id - 1 -> {"schema", "schemaType", "references"}
        # subject -> its versions, oldest first: {"version": n, "id": schema id, "deleted": bool}
        self.subjects: dict[str, list[dict]] = {}
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
        """How many times ``GET /schemas/ids/{schema_id}`` was asked (with any query)."""
        return sum(1 for m, p in self.requests
                   if m == "GET" and p.split("?")[0] == f"/schemas/ids/{schema_id}")

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

    # -- the registry's rules (called with the lock held) -------------------------------------

    def _versions(self, subject: str, deleted: bool) -> list[dict]:
        """The subject's versions (soft-deleted ones too with ``deleted``); 40401 when it has
        none to show."""
        found = [v for v in self.subjects.get(subject, ()) if deleted or not v["deleted"]]
        if not found:
            raise _Answer(404, 40401, f"Subject '{subject}' not found.")
        return found

    def _version(self, subject: str, version: str, deleted: bool) -> dict:
        versions = self._versions(subject, deleted)
        if version in ("latest", "-1"):
            return versions[-1]
        if not version.isdigit() or int(version) < 1:
            raise _Answer(422, 42202, f"The specified version '{version}' is not a valid version id.")
        for v in versions:
            if v["version"] == int(version):
                return v
        raise _Answer(404, 40402, f"Version {version} not found.")

    def _described(self, subject: str, v: dict, fmt: str = "") -> dict:
        return {"subject": subject, "version": v["version"], "id": v["id"],
                **_public(self.schemas[v["id"] - 1], fmt if self.serialized_format else "")}

    def _protobuf_forms(self, entry: dict) -> dict:
        """``entry`` with both forms of its Protobuf schema: ``schema`` (text) and ``serialized``
        (base64 ``FileDescriptorProto``); 42201 when it is neither valid form."""
        from google.protobuf import descriptor_pb2
        from google.protobuf.message import DecodeError

        from protokit import compile_texts, proto_text

        text = entry["schema"]
        try:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text, validate=True))
            if not fdp.name:
                raise ValueError("no file name")
            return {**entry, "schema": proto_text(fdp), "serialized": text}
        except (ValueError, DecodeError):
            pass
        files = {"default.proto": text}
        self._reference_texts(entry["references"], files)
        try:
            compiled = {f.name: f for f in compile_texts(files)}
        except ValueError as exc:
            raise _Answer(422, 42201, f"Invalid schema: {exc}") from None
        serialized = base64.b64encode(compiled["default.proto"].SerializeToString()).decode()
        return {**entry, "serialized": serialized}

    def _reference_texts(self, refs: list, files: dict) -> None:
        for ref in refs:
            if ref["name"] in files:
                continue
            ref_entry = self.schemas[self._version(ref["subject"], str(ref["version"]), True)["id"] - 1]
            files[ref["name"]] = ref_entry["schema"]
            self._reference_texts(ref_entry["references"], files)

    def _register(self, subject: str, entry: dict) -> int:
        key = _canonical(entry)
        # Ids are global: the same schema under any subject keeps its id.
        sid = next((i + 1 for i, e in enumerate(self.schemas) if _canonical(e) == key), None)
        if sid is None:
            self.schemas.append(entry)
            sid = len(self.schemas)
        versions = self.subjects.setdefault(subject, [])
        if not any(v["id"] == sid and not v["deleted"] for v in versions):
            # Version numbers are never reused, not even after a delete.
            versions.append({"version": max((v["version"] for v in versions), default=0) + 1,
                             "id": sid, "deleted": False})
        return sid

    def _lookup(self, subject: str, entry: dict, deleted: bool) -> dict:
        versions = self._versions(subject, deleted)
        key = _canonical(entry)
        for v in reversed(versions):
            if _canonical(self.schemas[v["id"] - 1]) == key:
                return self._described(subject, v)
        raise _Answer(404, 40403, "Schema not found")

    def _delete(self, subject: str, version: str | None, permanent: bool) -> list[int] | int:
        if version is None:
            versions = self.subjects.get(subject) or []
            if not versions:
                raise _Answer(404, 40401, f"Subject '{subject}' not found.")
            live = [v for v in versions if not v["deleted"]]
            if permanent:
                if live:
                    raise _Answer(404, 40405, f"Subject '{subject}' was not deleted first before "
                                              f"being permanently deleted")
                del self.subjects[subject]
                return [v["version"] for v in versions]
            if not live:
                raise _Answer(404, 40404, f"Subject '{subject}' was soft deleted.")
            for v in live:
                v["deleted"] = True
            return [v["version"] for v in live]
        v = self._version(subject, version, deleted=permanent)
        if permanent:
            if not v["deleted"]:
                raise _Answer(404, 40407, f"Subject '{subject}' Version {v['version']} was not "
                                          f"deleted first before being permanently deleted")
            self.subjects[subject].remove(v)
            if not self.subjects[subject]:
                del self.subjects[subject]
        else:
            v["deleted"] = True
        return v["version"]


def _flag(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _schema_entry(raw: bytes, normalize: bool) -> dict:
    """The stored form of a register or lookup body; 42201 when it is not a schema."""
    try:
        body = json.loads(raw)
        entry = {"schema": body["schema"], "schemaType": body.get("schemaType") or "AVRO",
                 "references": body.get("references") or []}
        if entry["schemaType"] == "AVRO":
            parsed = json.loads(entry["schema"])
            if not entry["references"]:  # a schema with references needs them to parse
                parse_schema(parsed)
            if normalize:
                entry["schema"] = json.dumps(_normalized(parsed), separators=(",", ":"))
    except Exception as exc:  # json and fastavro raise several types for a bad schema
        raise _Answer(422, 42201, f"Invalid schema: {exc}") from None
    return entry


def _normalized(node):
    """What ``normalize=true`` changes here: ``{"type": "string"}`` becomes ``"string"``, and
    object keys are sorted; the real registry's normal form goes further (namespaces)."""
    if isinstance(node, list):
        return [_normalized(n) for n in node]
    if isinstance(node, dict):
        if set(node) == {"type"} and node["type"] in _PRIMITIVES:
            return node["type"]
        return {k: _normalized(node[k]) for k in sorted(node)}
    return node


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

        def _authorized(self) -> bool:
            if reg.username is None:
                return True
            if self.headers.get("Authorization") == reg._auth_header()["Authorization"]:
                return True
            self._send(401, {"error_code": 40101, "message": "Unauthorized"},
                       {"WWW-Authenticate": 'Basic realm="SchemaRegistry"'})
            return False

        def _serve(self, route) -> None:
            with reg.lock:
                reg.requests.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self._authorized():
                return
            if self.command == "GET":
                with reg.lock:
                    status = reg.fail.pop(0) if reg.fail else None
                if status is not None:
                    return self._send(status, {"error_code": status * 100 + 1,
                                               "message": f"failing on purpose with {status}"})
            split = urlsplit(self.path)
            parts = [unquote(p) for p in split.path.strip("/").split("/")]
            query = parse_qs(split.query)
            try:
                with reg.lock:
                    found = route(parts, query, raw)
            except _Answer as ans:
                return self._send(ans.status, {"error_code": ans.error_code, "message": ans.message})
            if found is None:
                return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
            self._send(200, found)

        def do_GET(self) -> None:
            self._serve(_get)

        def do_POST(self) -> None:
            self._serve(_post)

        def do_DELETE(self) -> None:
            self._serve(_delete)

    def _get(parts: list, query: dict, _raw: bytes):
        deleted = _flag(query, "deleted")
        if parts == ["schemas", "types"]:
            return ["AVRO", "JSON", "PROTOBUF"]
        if len(parts) in (3, 4) and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
            sid = int(parts[2])
            if not 1 <= sid <= len(reg.schemas):
                raise _Answer(404, 40403, f"Schema {sid} not found")
            if len(parts) == 3:
                return _public(reg.schemas[sid - 1], _format(reg, query))
            uses = [(s, v["version"]) for s, vs in sorted(reg.subjects.items()) for v in vs
                    if v["id"] == sid and (deleted or not v["deleted"])]
            if parts[3] == "subjects":
                return sorted({s for s, _ in uses})
            if parts[3] == "versions":
                return [{"subject": s, "version": n} for s, n in uses]
            return None
        if parts == ["subjects"]:
            prefix = query.get("subjectPrefix", [""])[-1]
            return sorted(s for s, vs in reg.subjects.items() if s.startswith(prefix)
                          and any(deleted or not v["deleted"] for v in vs))
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            return [v["version"] for v in reg._versions(parts[1], deleted)]
        if len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions":
            return reg._described(parts[1], reg._version(parts[1], parts[3], deleted), _format(reg, query))
        return None

    def _post(parts: list, query: dict, raw: bytes):
        if len(parts) not in (2, 3) or parts[0] != "subjects" or parts[2:] not in ([], ["versions"]):
            return None
        entry = _schema_entry(raw, _flag(query, "normalize"))
        if entry["schemaType"] == "PROTOBUF":
            entry = reg._protobuf_forms(entry)
        if len(parts) == 3:
            return {"id": reg._register(parts[1], entry)}
        return reg._lookup(parts[1], entry, _flag(query, "deleted"))

    def _delete(parts: list, query: dict, _raw: bytes):
        permanent = _flag(query, "permanent")
        if len(parts) == 2 and parts[0] == "subjects":
            return reg._delete(parts[1], None, permanent)
        if len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions":
            return reg._delete(parts[1], parts[3], permanent)
        return None

    return Handler


def _format(reg: SchemaRegistry, query: dict) -> str:
    return query.get("format", [""])[-1] if reg.serialized_format else ""


def _canonical(entry: dict) -> tuple:
    text = entry.get("serialized") or entry["schema"]  # Protobuf: the descriptor, whatever the form
    try:
        text = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        pass
    return (entry["schemaType"], text, json.dumps(entry["references"], sort_keys=True))


def _public(entry: dict, fmt: str = "") -> dict:
    out = {"schema": entry["serialized"] if fmt == "serialized" and "serialized" in entry else entry["schema"]}
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
