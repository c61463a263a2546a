"""``json`` with ``registry``: Confluent's JSON Schema wire format (what ``JSONSerializer`` writes).

Every value is byte 0, a 4-byte big-endian schema id, then UTF-8 JSON. The JSON Schema is
fetched by id (``GET {url}/schemas/ids/{id}``) once per id, with the schemas it references
bundled in (see ``_bundle``), so that

- an id the registry does not have is a bad value, as for Avro;
- ``schema()`` gives the sinks the declared types of the most recent id decoded;
- ``validate: registry`` checks each value against the schema of its own id
  (``RegistryValidator``), compiled once per id.

Decoding needs no schema: after the header, it is the plain ``json`` deserializer's msgspec.
"""
from __future__ import annotations

import json
from itertools import repeat
from typing import Any, Mapping

from kpipe.api import BadRecordError, Deserializer, FatalError
from kpipe.validation import Validator

from .registry import HEADER_SIZE, NotFound, RegistryClient, SchemaCache, client_from_config, split_header

__all__ = ["JsonRegistryDeserializer", "RegistryValidator"]


class JsonRegistryDeserializer(Deserializer):
    """UTF-8 JSON after Confluent's 5-byte header. A tombstone (null value) becomes ``None``."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        import msgspec

        self._decode = msgspec.json.Decoder().decode
        self._errors = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
        self.registry: RegistryClient = client_from_config(config["registry"], "json")
        self.schemas = SchemaCache(self._load, "json", self.registry.display_url)
        self.latest_id: int | None = None  # the schema id of the most recent value decoded

    def schema(self):
        """The JSON Schema of the most recent schema id decoded; None before the first value,
        or when that schema is not an object (``true``, say)."""
        typed = self.schemas.by_id[self.latest_id][1] if self.latest_id is not None else None
        return typed if isinstance(typed, dict) else None

    def deserialize(self, raw):
        decode, errors, schemas = self._decode, self._errors, self.schemas
        out: list = []
        append = out.append
        header = None  # the previous value's 5 header bytes: a value with the same ones needs no checks
        for v in raw:
            if v is None:
                append(None)
                continue
            if v[:HEADER_SIZE] != header:
                sid = split_header(v, len(out))
                schemas.get(sid, len(out))
                self.latest_id = sid
                header = v[:HEADER_SIZE]
            try:
                append(decode(v[HEADER_SIZE:]))
            except errors as exc:
                raise BadRecordError(f"invalid JSON after the wire header (schema id {sid}): "
                                     f"{type(exc).__name__}: {exc}", index=len(out)) from None
        return out

    def encode_json(self, value: Any, topic: str) -> bytes:
        """``value`` as Confluent's JSONSerializer writes it with the latest schema under
        ``{topic}-value`` (the serializers' default subject), for ``kpipe test`` cases that give
        ``json``: so the case is decoded and validated as a value on the topic would be."""
        import msgspec

        try:
            doc = self.registry.version(f"{topic}-value", "latest")
        except NotFound as exc:
            raise FatalError(f"input 'json': no schema under subject {topic}-value in the schema registry "
                             f"{self.registry.display_url} ({exc})") from None
        sid = doc.get("id")
        if not isinstance(sid, int):
            raise FatalError(f"input 'json': the schema registry {self.registry.display_url} answered no id "
                             f"for subject {topic}-value")
        return b"\x00" + sid.to_bytes(4, "big") + msgspec.json.encode(value)

    def validator(self) -> "RegistryValidator":
        """What ``validate: registry`` runs: each value against the schema of its own id."""
        return RegistryValidator(self)

    def _load(self, sid: int) -> tuple:
        """(the JSON Schema of ``sid`` with its references bundled in, to validate with; the
        same with top-level ``$ref`` properties replaced by what they name, to type columns
        with); ``NotFound`` if unusable."""
        doc = self.registry.by_id(sid)
        schema = _parse(self.registry, doc, f"schema id {sid}")
        refs: dict = {}
        self._references(self.registry.references(doc, f"schema id {sid}"), refs)
        if not refs:
            return schema, schema
        return _bundle(schema, refs), _inline(schema, refs)

    def _references(self, refs: list, into: dict) -> None:
        """Every schema ``refs`` names, depth first, by the name the ``$ref`` uses."""
        for ref in refs:
            name = ref["name"]
            if name in into:
                continue
            doc = self.registry.version(ref["subject"], ref["version"])
            into[name] = _parse(self.registry, doc, f"reference {name!r}")
            self._references(self.registry.references(doc, f"reference {name!r}"), into)


def _parse(registry: RegistryClient, doc: Any, what: str) -> Any:
    text = registry.schema_text(doc, "JSON", what)
    try:
        schema = json.loads(text)
    except ValueError:
        raise NotFound(f"{what} in {registry.display_url} is not JSON") from None
    if not isinstance(schema, (dict, bool)):
        raise NotFound(f"{what} in {registry.display_url} is not a JSON Schema (an object or a boolean)")
    return schema


def _bundle(schema: Any, refs: dict) -> Any:
    """``schema`` with each referenced schema embedded as a resource whose ``$id`` is the name
    its ``$ref`` uses (how Confluent's serializer resolves them), so that it stands alone:
    jsonschema and jsonschema-rs resolve ``"$ref": "money.json"`` to the embedded one."""
    if not isinstance(schema, dict):
        return schema
    key = "definitions" if "draft-0" in str(schema.get("$schema", "")) else "$defs"
    embedded = dict(schema.get(key) or {})
    for n, (name, ref) in enumerate(refs.items()):
        body = dict(ref) if isinstance(ref, dict) else {"allOf": [ref]}
        body["$id"] = name
        embedded[f"kpipe-reference-{n}"] = body
    return {**schema, key: embedded}


def _inline(schema: Any, refs: dict) -> Any:
    """``schema`` with each top-level property that is only a ``$ref`` to a reference replaced by
    that schema: the sinks take column types from the top-level properties alone."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return schema
    inlined = {}
    for name, prop in props.items():
        target = refs.get(prop.get("$ref")) if isinstance(prop, dict) and len(prop) == 1 else None
        inlined[name] = {k: v for k, v in target.items() if k not in ("$schema", "$id")} \
            if isinstance(target, dict) else prop
    return {**schema, "properties": inlined}


class RegistryValidator:
    """Checks decoded values against the JSON Schema of their own schema id, read from each
    raw value's header; each schema is compiled once (``kpipe.validation.Validator``).

    A value with no wire header (a ``kpipe test`` case that gives the decoded value) is checked
    against the most recent schema decoded, and not at all before there is one.
    """

    def __init__(self, deserializer: JsonRegistryDeserializer):
        self._deserializer = deserializer
        self._compiled: dict[int, Validator | str] = {}  # schema id -> Validator, or why not

    def check(self, values: list, raw: list) -> list[tuple[int, str]]:
        """``(index, message)`` of every value that does not match its schema, in order;
        ``raw[i]`` is the value ``values[i]`` was decoded from."""
        bad: list = []
        for lo, hi, sid in self._runs(raw):
            validator = self._validator(sid)
            if isinstance(validator, str):
                bad += [(i, validator) for i in range(lo, hi) if values[i] is not None]
            elif validator is not None:
                part = values[lo:hi] if hi - lo < len(values) else values
                bad += [(lo + i, m) for i, m in validator.check(part)]
        return bad

    def _runs(self, raw: list):
        """``(lo, hi, schema id or None)`` of each run of values with the same header."""
        n = len(raw)
        if not n:
            return
        header = (raw[0] or b"")[:HEADER_SIZE]
        try:  # the common case: one header for all, found in one C-level pass
            if len(header) == HEADER_SIZE and all(map(bytes.startswith, raw, repeat(header))):
                yield 0, n, self._id(header)
                return
        except TypeError:  # not bytes
            pass
        lo = 0
        while lo < n:
            sid = self._id(raw[lo])
            hi = lo + 1
            while hi < n and self._id(raw[hi]) == sid:
                hi += 1
            yield lo, hi, sid
            lo = hi

    def _id(self, v) -> int | None:
        if not v or len(v) < HEADER_SIZE or v[0] != 0:
            return None
        return int.from_bytes(v[1:HEADER_SIZE], "big")

    def _validator(self, sid: int | None):
        if sid is None:
            sid = self._deserializer.latest_id
            if sid is None:
                return None
        found = self._compiled.get(sid)
        if found is None:
            try:
                schema = self._deserializer.schemas.get(sid, 0)[0]
            except BadRecordError as exc:  # decoding rejected it already; here only for a given value
                return str(exc)
            try:
                found = Validator(schema)
            except FatalError as exc:  # the registry serves a schema jsonschema cannot compile
                found = f"schema id {sid} is not a valid JSON Schema: {exc}"
            self._compiled[sid] = found
        return found
