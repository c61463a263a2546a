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

import io
import json
from typing import Any, Mapping

from kpipe.api import BadRecordError, Deserializer, DeserializerPlugin, FatalError
from kpipe.validation import read_json_file

from .avro_names import fullname, standalone
from .registry import REGISTRY_SCHEMA, NotFound, RegistryClient, SchemaCache, client_from_config, split_header

__all__ = ["AvroDeserializer", "avro_plugin", "CONFIG_SCHEMA", "load_avsc"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Avro binary values: schemaless with a local .avsc (schema), or Confluent wire format "
                   "with the writer schema fetched by id from a Schema Registry (registry).",
    "properties": {
        "schema": {"type": "string", "minLength": 1, "x-path": True,
                   "description": "Path of the .avsc the values were written with (schemaless Avro, no header). "
                                  "Relative to the spec file's directory."},
        "registry": REGISTRY_SCHEMA,
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
        self._by_id: SchemaCache | None = None
        self._latest_json = None
        if config.get("schema"):
            if config.get("registry"):
                raise FatalError("avro: set exactly one of 'schema' or 'registry'")
            writer_json = load_avsc(config["schema"], spec_file, "schema")
            self._writer, self._writer_reader = self._pair(writer_json)
            self._latest_json = writer_json
        elif config.get("registry"):
            self.registry = client_from_config(config["registry"], "avro")
            self._by_id = SchemaCache(self._load, "avro", self.registry.display_url)
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
        cache = self._by_id
        for v in raw:
            if v is None:
                append(None)
                continue
            n = len(v)
            if v[:5] != header:
                sid = split_header(v, len(out))
                writer, reader, self._latest_json = cache.get(sid, len(out))
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

    def _load(self, sid: int) -> tuple:
        """(writer, reader or None, standalone writer JSON) of ``sid``; ``NotFound`` if unusable."""
        writer_json, named, whole = _avro_schema(self.registry, sid)
        try:
            writer, reader = self._pair(writer_json, named)
        except Exception as exc:
            raise NotFound(f"schema id {sid} from {self.registry.display_url} is not a valid Avro schema: {exc}") from None
        return writer, reader, whole


def _misfit(index: int, size: int, used: int, sid: int | None = None) -> BadRecordError:
    what = f"Avro value of {size} bytes" + (f" (schema id {sid})" if sid is not None else "")
    if used < size:
        return BadRecordError(f"invalid {what}: {size - used} bytes left over after the datum "
                              f"(written with a different schema?)", index=index)
    return BadRecordError(f"invalid {what}: the datum needs more bytes than the value has "
                          f"(written with a different schema?)", index=index)


# -- Avro schemas and their references from the registry ---------------------------------------


def _avro_schema(registry: RegistryClient, sid: int) -> tuple[Any, dict, Any]:
    """(the writer schema's JSON, fastavro named schemas of its references, the writer
    schema with the referenced types defined in it so that it parses alone) for ``sid``.

    Raises ``NotFound`` for an unknown id, or for a schema that is not Avro.
    """
    doc = registry.by_id(sid)
    named: dict = {}
    defs: dict = {}
    _load_references(registry, registry.references(doc, f"schema id {sid}"), named, set(), defs)
    writer_json = _schema_json(registry, doc, f"schema id {sid}")
    return writer_json, named, standalone(writer_json, defs)


def _load_references(registry: RegistryClient, refs: list, named: dict, seen: set, defs: dict) -> None:
    """Parse every referenced schema (depth first) into ``named``, so that the schema that
    references them parses; ``defs`` gets each one's JSON by full name."""
    from fastavro import parse_schema

    for ref in refs:
        key = (ref.get("subject"), ref.get("version"))
        if key in seen:
            continue
        seen.add(key)
        doc = registry.version(ref.get("subject"), ref.get("version"))
        _load_references(registry, registry.references(doc, f"reference {ref['name']!r}"), named, seen, defs)
        ref_json = _schema_json(registry, doc, f"reference {ref.get('name')!r}")
        parse_schema(ref_json, named)
        name = fullname(ref_json)
        if name is not None:
            defs[name] = standalone(ref_json, defs)


def _schema_json(registry: RegistryClient, doc: Any, what: str) -> Any:
    text = registry.schema_text(doc, "AVRO", what)
    try:
        return json.loads(text)
    except ValueError:
        raise NotFound(f"{what} in {registry.display_url} has no readable schema") from None


avro_plugin = DeserializerPlugin(
    "avro", CONFIG_SCHEMA, AvroDeserializer,
    "Avro values: schemaless with a local .avsc, or Confluent wire format via a Schema Registry (fastavro)")
