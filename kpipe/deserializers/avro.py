"""``avro``: Avro binary values, schemaless with a local ``.avsc`` or in Confluent wire format.

- ``schema: orders.avsc``: every value is one Avro datum written with that schema (no header).
- ``registry: {url: ...}``: every value is the Confluent wire format: byte 0, a 4-byte
  big-endian schema id, then the Avro datum. The writer schema is fetched by id from the Schema
  Registry (``GET {url}/schemas/ids/{id}``) once per id and kept for the life of the process.
- ``reader_schema: orders-v2.avsc`` (either mode): values are resolved to this schema (Avro
  schema evolution: added fields take their defaults, removed fields are dropped).

Decoding a list is one pass over one buffer: the values are joined once and fastavro's
``schemaless_reader`` reads them one after the other from a single ``BytesIO``; after each
value the position must be exactly at the value's end, so a value that is too short, or has
bytes left over, is a bad record rather than a silent misread. fastavro is imported only when a
pipeline actually uses this deserializer, so ``kpipe validate`` never loads it.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import time
import urllib.parse
from typing import Any, Mapping

from kpipe.api import BadRecordError, Deserializer, DeserializerPlugin, FatalError, RetryableError
from kpipe.validation import read_json_file

from .avro_names import fullname, standalone

__all__ = ["AvroDeserializer", "RegistryClient", "avro_plugin", "CONFIG_SCHEMA", "load_avsc"]

log = logging.getLogger("kpipe.avro")

_DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"  # kpipe.spec.units.DURATION_PATTERN
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MISSING_TTL = 60.0  # seconds a "no such schema id" answer is remembered

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Avro binary values: schemaless with a local .avsc (schema), or Confluent wire format "
                   "with the writer schema fetched by id from a Schema Registry (registry).",
    "properties": {
        "schema": {"type": "string", "minLength": 1, "x-path": True,
                   "description": "Path of the .avsc the values were written with (schemaless Avro, no header). "
                                  "Relative to the spec file's directory."},
        "registry": {
            "type": "object",
            "description": "Confluent wire format (magic byte 0, 4-byte schema id, Avro datum); the writer "
                           "schema comes from GET {url}/schemas/ids/{id}, fetched once per id.",
            "properties": {
                "url": {"type": "string", "pattern": r"^https?://[^/]", "x-secret": True,
                        "x-expected": "an http:// or https:// URL of the Schema Registry",
                        "description": "Base URL of the Schema Registry, e.g. https://registry:8081."},
                "username": {"type": "string", "description": "Basic auth user (e.g. ${SR_USER})."},
                "password": {"type": "string", "x-secret": True,
                             "description": "Basic auth password (e.g. ${SR_PASSWORD}); never printed."},
                "timeout": {"default": "10s",
                            "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                      {"type": "string", "pattern": _DURATION}],
                            "x-expected": "a duration such as 500ms or 10s, or a number of seconds",
                            "description": "Timeout of one registry request."},
            },
            "required": ["url"],
            "dependentRequired": {"username": ["password"], "password": ["username"]},
            "additionalProperties": False,
        },
        "reader_schema": {"type": "string", "minLength": 1, "x-path": True,
                          "description": "Path of an .avsc to resolve every value to (Avro schema evolution). "
                                         "Relative to the spec file's directory."},
    },
    "oneOf": [{"required": ["schema"]}, {"required": ["registry"]}],
    "additionalProperties": False,
}


def load_avsc(path: str, spec_file: str = "", what: str = "schema") -> Any:
    """The JSON of an ``.avsc`` file, checked with fastavro; ``FatalError`` when it is not one."""
    from fastavro import parse_schema

    full, schema = read_json_file(path, spec_file, f"avro {what}")
    try:
        parse_schema(schema)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise FatalError(f"avro {what}: {full} is not a valid Avro schema: {exc}") from None
    return schema


def _seconds(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for unit in ("ms", "s", "m", "h"):
        if isinstance(value, str) and value.endswith(unit):
            try:
                return float(value[: -len(unit)]) * _DURATION_UNITS[unit]
            except ValueError:
                break
    raise FatalError(f"avro registry.timeout: not a duration: {value!r} (use e.g. 500ms or 10s)")


class AvroDeserializer(Deserializer):
    """Decodes Avro values to dicts (or whatever the schema's top-level type gives).

    Logical types come back as fastavro returns them: ``timestamp-*`` as timezone-aware
    ``datetime``, ``date``, ``time``, ``decimal`` as ``Decimal``, ``uuid`` as ``UUID``.
    ``None`` (a tombstone, or a missing key) stays ``None``.

    ``spec_file``: relative paths (``schema``, ``reader_schema``) are resolved against its
    directory; without it, against the current directory.
    """

    def __init__(self, config: Mapping[str, Any], spec_file: str = ""):
        super().__init__(config)
        from fastavro import parse_schema, schemaless_reader

        self._parse = parse_schema
        self._read = schemaless_reader
        self._reader_json = None
        self._reader = None
        if config.get("reader_schema"):
            self._reader_json = load_avsc(config["reader_schema"], spec_file, "reader_schema")
            self._reader = parse_schema(self._reader_json)
        self.registry: RegistryClient | None = None
        # schema id -> (writer, reader or None, writer JSON with its references' types in it)
        self._by_id: dict[int, tuple] = {}
        self._missing: dict[int, tuple[float, str]] = {}  # schema id -> (until, message)
        self._latest_json = None
        if config.get("schema"):
            if config.get("registry"):
                raise FatalError("avro: set exactly one of 'schema' or 'registry'")
            writer_json = load_avsc(config["schema"], spec_file, "schema")
            self._writer, self._writer_reader = self._pair(writer_json)
            self._latest_json = writer_json
        elif config.get("registry"):
            reg = config["registry"]
            self.registry = RegistryClient(reg["url"], reg.get("username"), reg.get("password"),
                                           _seconds(reg.get("timeout", "10s")))
        else:
            raise FatalError("avro: set exactly one of 'schema' (an .avsc file) or 'registry' (a Schema Registry)")

    def _pair(self, writer_json, named: dict | None = None) -> tuple:
        """(parsed writer, parsed reader or None when the reader schema is the writer's)."""
        writer = self._parse(writer_json, named) if named is not None else self._parse(writer_json)
        reader = self._reader if self._reader_json is not None and self._reader_json != writer_json else None
        return writer, reader

    def schema(self):
        """The schema the values follow: ``reader_schema`` when given, else the writer schema
        (with a registry: that of the most recent schema id decoded). None before the first
        registry value, or when the top-level type is not a record or other JSON object."""
        found = self._reader_json if self._reader_json is not None else self._latest_json
        return found if isinstance(found, dict) else None

    def deserialize(self, raw):
        try:
            data = b"".join(raw)
        except TypeError:  # tombstones
            data = b"".join([v for v in raw if v is not None])
        fo = io.BytesIO(data)
        if self.registry is None:
            return self._plain(raw, fo)
        return self._wire(raw, fo)

    def _plain(self, raw, fo):
        read, writer, reader, tell = self._read, self._writer, self._writer_reader, fo.tell
        out: list = []
        append = out.append
        end = 0
        for v in raw:
            if v is None:
                append(None)
                continue
            end += len(v)
            try:
                append(read(fo, writer, reader))
            except Exception as exc:  # fastavro raises EOFError, IndexError, UnicodeDecodeError, ...
                raise self._bad(exc, len(out), v, writer, reader) from None
            if tell() != end:
                raise _misfit(len(out) - 1, len(v), tell() - (end - len(v)))
        return out

    def _wire(self, raw, fo):
        read, seek, tell = self._read, fo.seek, fo.tell
        out: list = []
        append = out.append
        pos = 0
        header = None  # the previous value's 5 header bytes: a value with the same ones needs no checks
        writer = reader = None
        for v in raw:
            if v is None:
                append(None)
                continue
            n = len(v)
            if v[:5] != header:
                if n < 5 or v[0] != 0:
                    raise BadRecordError(_not_wire(v), index=len(out))
                sid = int.from_bytes(v[1:5], "big")
                entry = self._by_id.get(sid) or self._fetch(sid, len(out))
                writer, reader, self._latest_json = entry
                header = v[:5]
            seek(pos + 5)
            try:
                append(read(fo, writer, reader))
            except Exception as exc:
                raise self._bad(exc, len(out), v[5:], writer, reader, sid) from None
            pos += n
            if tell() != pos:
                raise _misfit(len(out) - 1, n - 5, tell() - (pos - n) - 5, sid)
        return out

    def _bad(self, exc: Exception, index: int, datum: bytes, writer, reader,
             sid: int | None = None) -> BadRecordError:
        what = f"Avro value of {len(datum)} bytes" + (f" (schema id {sid})" if sid is not None else "")
        detail = str(exc) or type(exc).__name__
        if type(exc).__name__ == "SchemaResolutionError":
            return BadRecordError(f"{what} cannot be resolved to reader_schema: {detail}", index=index)
        # Ran out of bytes? fastavro says so with EOFError, StopIteration or IndexError alike;
        # the same datum with zeros after it decodes if it was only cut short.
        padded = io.BytesIO(datum + bytes(64))
        try:
            self._read(padded, writer, reader)
        except Exception:
            pass
        else:
            return _misfit(index, len(datum), padded.tell(), sid)
        return BadRecordError(f"invalid {what}: {type(exc).__name__}: {detail}", index=index)

    def _fetch(self, sid: int, index: int) -> tuple:
        missing = self._missing.get(sid)
        if missing is not None and missing[0] > time.monotonic():
            raise BadRecordError(missing[1], index=index)
        try:
            writer_json, named, whole = self.registry.avro_schema(sid)
        except _NotFound as exc:
            self._missing[sid] = (time.monotonic() + _MISSING_TTL, str(exc))
            raise BadRecordError(str(exc), index=index) from None
        try:
            writer, reader = self._pair(writer_json, named)
        except Exception as exc:
            msg = f"schema id {sid} from {self.registry.display_url} is not a valid Avro schema: {exc}"
            self._missing[sid] = (time.monotonic() + _MISSING_TTL, msg)
            raise BadRecordError(msg, index=index) from None
        entry = self._by_id[sid] = (writer, reader, whole)
        log.info("avro: schema id %d from %s cached", sid, self.registry.display_url)
        return entry


def _misfit(index: int, size: int, used: int, sid: int | None = None) -> BadRecordError:
    what = f"Avro value of {size} bytes" + (f" (schema id {sid})" if sid is not None else "")
    if used < size:
        return BadRecordError(f"invalid {what}: {size - used} bytes left over after the datum "
                              f"(written with a different schema?)", index=index)
    return BadRecordError(f"invalid {what}: the datum needs more bytes than the value has "
                          f"(written with a different schema?)", index=index)


def _not_wire(v: bytes) -> str:
    if len(v) < 5:
        return (f"not Confluent wire format: {len(v)} bytes, shorter than its 5-byte header "
                f"(magic byte 0 + 4-byte schema id)")
    return (f"not Confluent wire format: magic byte 0x{v[0]:02x}, expected 0x00 "
            f"(is the topic written without a Schema Registry serializer?)")


# -- the Schema Registry client ------------------------------------------------------------


class _NotFound(Exception):
    pass


class RegistryClient:
    """A minimal Confluent Schema Registry client: schemas by id, with basic auth.

    Every failure is classified: cannot connect, a timeout, HTTP 5xx or 429 -> ``RetryableError``;
    401/403 -> ``FatalError``; a 404 carrying a registry error code (404xx) -> not found;
    anything else -> ``FatalError``. Credentials appear in no message: ``display_url`` is the
    URL without any ``user:password@`` part.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0):
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None and username is None:
            username = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.display_url = self.base
        self.timeout = timeout
        self._headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._auth_hint = ("check registry.username and registry.password" if username is not None
                           else "this registry needs credentials: set registry.username and registry.password")

    def get(self, path: str) -> Any:
        """The JSON body of ``GET {url}{path}``; raises as the class docstring says."""
        import http.client  # here, not at module level: listing plugins must stay cheap
        import socket
        import urllib.error
        import urllib.request

        url = self.base + path
        req = urllib.request.Request(url, headers=self._headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = _read_quietly(exc)
            exc.close()
            raise self._classify(exc.code, path, body) from None
        except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise RetryableError(f"schema registry {self.display_url} unreachable: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise FatalError(f"schema registry {self.display_url}: GET {path} answered something that is "
                             f"not JSON: is registry.url the registry's base URL?") from None

    def _classify(self, code: int, path: str, body: bytes) -> Exception:
        detail = _registry_message(body)
        if code in (401, 403):
            return FatalError(f"schema registry {self.display_url} refused the request (HTTP {code}"
                              f"{': ' + detail if detail else ''}): {self._auth_hint}")
        if code == 404 and _registry_code(body) // 100 == 404:
            return _NotFound(detail or f"GET {path}: not found")
        if code == 429 or code >= 500:
            return RetryableError(f"schema registry {self.display_url}: GET {path} failed with HTTP {code}"
                                  f"{': ' + detail if detail else ''}")
        return FatalError(f"schema registry {self.display_url}: GET {path} failed with HTTP {code}"
                          f"{': ' + detail if detail else ''}; is registry.url the registry's base URL?")

    def avro_schema(self, sid: int) -> tuple[Any, dict, Any]:
        """(the writer schema's JSON, fastavro named schemas of its references, the writer
        schema with the referenced types defined in it so that it parses alone) for ``sid``.

        Raises ``_NotFound`` for an unknown id, or for a schema that is not Avro.
        """
        try:
            doc = self.get(f"/schemas/ids/{sid}")
        except _NotFound as exc:
            raise _NotFound(f"schema id {sid} is not in the schema registry {self.display_url} ({exc})") from None
        named: dict = {}
        defs: dict = {}
        self._load_references(doc.get("references") or [], named, set(), defs)
        writer_json = self._schema_json(doc, f"schema id {sid}")
        return writer_json, named, standalone(writer_json, defs)

    def _load_references(self, refs: list, named: dict, seen: set, defs: dict) -> None:
        """Parse every referenced schema (depth first) into ``named``, so that the schema that
        references them parses; ``defs`` gets each one's JSON by full name."""
        from fastavro import parse_schema

        for ref in refs:
            key = (ref.get("subject"), ref.get("version"))
            if key in seen:
                continue
            seen.add(key)
            subject = urllib.parse.quote(str(ref.get("subject")), safe="")
            doc = self.get(f"/subjects/{subject}/versions/{ref.get('version')}")
            self._load_references(doc.get("references") or [], named, seen, defs)
            ref_json = self._schema_json(doc, f"reference {ref.get('name')!r}")
            parse_schema(ref_json, named)
            name = fullname(ref_json)
            if name is not None:
                defs[name] = standalone(ref_json, defs)

    def _schema_json(self, doc: Any, what: str) -> Any:
        kind = doc.get("schemaType", "AVRO") if isinstance(doc, dict) else None
        if kind != "AVRO":
            raise _NotFound(f"{what} in {self.display_url} is a {kind} schema, not Avro")
        try:
            return json.loads(doc["schema"])
        except (KeyError, TypeError, ValueError):
            raise _NotFound(f"{what} in {self.display_url} has no readable schema") from None


def _read_quietly(exc) -> bytes:
    try:
        return exc.read() or b""
    except Exception:
        return b""


def _registry_code(body: bytes) -> int:
    try:
        code = json.loads(body).get("error_code")
        return code if isinstance(code, int) else 0
    except (ValueError, AttributeError):
        return 0


def _registry_message(body: bytes) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return ""
    return message[:200] if isinstance(message, str) else ""


avro_plugin = DeserializerPlugin(
    "avro", CONFIG_SCHEMA, AvroDeserializer,
    "Avro values: schemaless with a local .avsc, or Confluent wire format via a Schema Registry (fastavro)")
