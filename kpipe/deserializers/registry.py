"""The Confluent Schema Registry, as every wire-format deserializer (avro, json, protobuf) reads it.

- ``REGISTRY_SCHEMA``: the ``registry:`` config block (url, username/password, timeout); each
  deserializer puts this same object in its config schema.
- ``RegistryClient``: ``GET`` with basic auth and a timeout, every failure classified.
- ``SchemaCache``: schemas by id, loaded once; an id the registry lacks is remembered a while.
- ``split_header``: Confluent's 5-byte header (magic byte 0, 4-byte big-endian schema id).
"""
from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from typing import Any, Callable, Mapping

from kpipe.api import BadRecordError, FatalError, RetryableError

__all__ = ["REGISTRY_SCHEMA", "RegistryClient", "NotFound", "SchemaCache", "split_header",
           "client_from_config", "seconds", "HEADER_SIZE", "MISSING_TTL", "MISSING_SWEEP"]

log = logging.getLogger("kpipe.registry")

HEADER_SIZE = 5  # magic byte 0 + 4-byte big-endian schema id
MISSING_TTL = 60.0  # seconds a "no such schema id" answer is remembered
MISSING_SWEEP = 1024  # remembered misses past which the expired ones are dropped
_DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"  # kpipe.spec.units.DURATION_PATTERN
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

REGISTRY_SCHEMA = {
    "type": "object",
    "description": "Confluent wire format (magic byte 0, 4-byte schema id, then the encoded value); the "
                   "schema comes from GET {url}/schemas/ids/{id}, fetched once per id.",
    "properties": {
        "url": {"type": "string", "pattern": r"^https?://[^/]", "x-secret": True,
                "x-expected": "an http:// or https:// URL of the Schema Registry",
                "description": "Base URL of the Schema Registry, e.g. https://registry:8081."},
        "username": {"type": "string", "description": "Basic auth user (e.g. ${SR_USER})."},
        "password": {"type": "string", "x-secret": True,
                     "description": "Basic auth password (e.g. ${SR_PASSWORD}); never printed."},
        "basic_auth": {"type": "string", "pattern": "^[^:]*:", "x-secret": True,
                       "x-expected": "USER:PASSWORD, e.g. ${SR_USER}:${SR_PASSWORD}",
                       "description": "Basic auth as one USER:PASSWORD string, as Confluent's clients take it "
                                      "(basic.auth.user.info); instead of username and password. Never printed."},
        "timeout": {"default": "10s",
                    "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": _DURATION}],
                    "x-expected": "a duration such as 500ms or 10s, or a number of seconds",
                    "description": "Timeout of one registry request."},
    },
    "required": ["url"],
    "dependentRequired": {"username": ["password"], "password": ["username"]},
    "dependentSchemas": {"basic_auth": {"properties": {
        k: {"not": {}, "x-expected": f"no {k} beside basic_auth (which holds USER:PASSWORD)"}
        for k in ("username", "password")}}},
    "additionalProperties": False,
}


def seconds(value, what: str = "registry.timeout") -> float:
    """A duration (``500ms``, ``10s``, or a number of seconds) in seconds; ``FatalError`` if not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for unit in ("ms", "s", "m", "h"):
        if isinstance(value, str) and value.endswith(unit):
            try:
                return float(value[: -len(unit)]) * _DURATION_UNITS[unit]
            except ValueError:
                break
    raise FatalError(f"{what}: not a duration: {value!r} (use e.g. 500ms or 10s)")


def client_from_config(reg: Mapping[str, Any], what: str) -> "RegistryClient":
    """The client a ``registry:`` block (``REGISTRY_SCHEMA``) describes; ``what`` prefixes errors."""
    username, password = reg.get("username"), reg.get("password")
    if reg.get("basic_auth") is not None:
        username, _, password = reg["basic_auth"].partition(":")  # the password may hold colons
    return RegistryClient(reg["url"], username, password,
                          seconds(reg.get("timeout", "10s"), f"{what} registry.timeout"))


def split_header(v: bytes, index: int) -> int:
    """The schema id in the Confluent header of ``v`` (the payload starts at ``HEADER_SIZE``);
    ``BadRecordError`` at ``index`` when ``v`` is too short or its magic byte is not 0."""
    if len(v) < HEADER_SIZE:
        raise BadRecordError(f"not Confluent wire format: {len(v)} bytes, shorter than its 5-byte header "
                             f"(magic byte 0 + 4-byte schema id)", index=index)
    if v[0] != 0:
        raise BadRecordError(f"not Confluent wire format: magic byte 0x{v[0]:02x}, expected 0x00 "
                             f"(is the topic written without a Schema Registry serializer?)", index=index)
    return int.from_bytes(v[1:HEADER_SIZE], "big")


class NotFound(Exception):
    """The registry has no such schema (or none usable): a bad value, not a registry failure."""


class SchemaCache:
    """Schemas by id: ``load(sid)`` runs once per id and its result is kept for the life of the
    process. ``load`` raises ``NotFound`` for an id that cannot be used; that answer is kept for
    ``MISSING_TTL`` seconds, so a topic full of one unknown id asks the registry once a minute;
    expired answers are dropped as misses pile up, so values with ever new unknown ids (garbage
    with a zero first byte) cannot grow the memory of them without bound. Any other error
    (``RetryableError`` from the registry) passes through, remembered by nobody."""

    def __init__(self, load: Callable[[int], Any], name: str, display_url: str):
        self._load = load
        self._name = name
        self._display_url = display_url
        self.by_id: dict[int, Any] = {}
        self._missing: dict[int, tuple[float, str]] = {}  # schema id -> (until, message)
        self._sweep_at = MISSING_SWEEP  # doubles with the live misses: sweeping stays amortized O(1)

    def get(self, sid: int, index: int) -> Any:
        """The loaded schema of ``sid``; ``BadRecordError`` at ``index`` when it cannot be had."""
        entry = self.by_id.get(sid)
        if entry is not None:
            return entry
        missing = self._missing.get(sid)
        if missing is not None and missing[0] > time.monotonic():
            raise BadRecordError(missing[1], index=index)
        try:
            entry = self._load(sid)
        except NotFound as exc:
            now = time.monotonic()
            if len(self._missing) >= self._sweep_at:
                self._missing = {k: e for k, e in self._missing.items() if e[0] > now}
                self._sweep_at = max(MISSING_SWEEP, 2 * len(self._missing))
            self._missing[sid] = (now + MISSING_TTL, str(exc))
            raise BadRecordError(str(exc), index=index) from None
        self.by_id[sid] = entry
        log.info("%s: schema id %d from %s cached", self._name, sid, self._display_url)
        return entry


class RegistryClient:
    """A minimal Confluent Schema Registry client: schemas by id, with basic auth.

    Every failure is classified: cannot connect, a timeout, HTTP 5xx or 429 -> ``RetryableError``;
    401/403 -> ``FatalError``; a 404 carrying a registry error code (404xx) -> ``NotFound``;
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

    def by_id(self, sid: int) -> dict:
        """The registry's answer for schema id ``sid`` (``schema``, ``schemaType``, ``references``);
        ``NotFound`` when the registry has no such id."""
        try:
            doc = self.get(f"/schemas/ids/{sid}")
        except NotFound as exc:
            raise NotFound(f"schema id {sid} is not in the schema registry {self.display_url} ({exc})") from None
        return doc if isinstance(doc, dict) else {}

    def version(self, subject: Any, version: Any) -> dict:
        """The registry's answer for ``subject``'s ``version`` (how a reference is found)."""
        doc = self.get(f"/subjects/{urllib.parse.quote(str(subject), safe='')}/versions/{version}")
        return doc if isinstance(doc, dict) else {}

    def references(self, doc: Any, what: str) -> list[dict]:
        """The ``references`` of a registry answer (none: ``[]``), each an object with a
        ``name``, ``subject`` and ``version``; ``NotFound`` when they are anything else, so that
        a registry answer no client could use is that id's bad record, not a crash."""
        refs = doc.get("references") if isinstance(doc, dict) else None
        if not refs:
            return []
        if isinstance(refs, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                          and isinstance(r.get("subject"), str)
                                          and isinstance(r.get("version"), (int, str)) for r in refs):
            return refs
        raise NotFound(f"{what} in {self.display_url} has references that are not a list of "
                       f"{{name, subject, version}} objects")

    def schema_text(self, doc: Any, kind: str, what: str) -> str:
        """The ``schema`` string of a registry answer whose ``schemaType`` is ``kind`` (absent
        means AVRO); ``NotFound`` when it is another kind, or has none."""
        found = doc.get("schemaType", "AVRO") if isinstance(doc, dict) else None
        if found != kind:
            raise NotFound(f"{what} in {self.display_url} is a {found} schema, not {_KIND_NAMES.get(kind, kind)}")
        text = doc.get("schema")
        if not isinstance(text, str):
            raise NotFound(f"{what} in {self.display_url} has no readable schema")
        return text

    def _classify(self, code: int, path: str, body: bytes) -> Exception:
        detail = _registry_message(body)
        if code in (401, 403):
            return FatalError(f"schema registry {self.display_url} refused the request (HTTP {code}"
                              f"{': ' + detail if detail else ''}): {self._auth_hint}")
        if code == 404 and _registry_code(body) // 100 == 404:
            return NotFound(detail or f"GET {path}: not found")
        if code == 429 or code >= 500:
            return RetryableError(f"schema registry {self.display_url}: GET {path} failed with HTTP {code}"
                                  f"{': ' + detail if detail else ''}")
        return FatalError(f"schema registry {self.display_url}: GET {path} failed with HTTP {code}"
                          f"{': ' + detail if detail else ''}; is registry.url the registry's base URL?")


_KIND_NAMES = {"AVRO": "Avro", "JSON": "JSON Schema", "PROTOBUF": "Protobuf"}


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
