"""avro: an Avro object container file, written by fastavro.

The schema is the one given (``avro_schema``); else the value deserializer's Avro schema, when
every record of the object fits it; else it is inferred from the records of the object:
a record named ``kpipe.Record`` with one field per top-level key in first-seen order, every
field a union that starts with ``null`` (default ``null``) followed by the types seen, in a fixed
order: boolean, long, double, string, bytes, array, record. Avro has no integer past 64 bits: a
record that holds one is refused (``EncodeError``), never rounded to a double. Nested objects become nested records
(``Record_<field>``), lists become arrays. Keys that are not Avro names are rewritten (invalid
characters to ``_``, a leading digit prefixed with ``_``, clashes numbered). A sink keeps a
dataset's inferred schema (``remember_schema``): each file is written with it, widened by new
fields (default null) and new union branches only, so the newest schema reads every file. Where
types are declared (``columns:``, a JSON Schema) the writer schema comes from the dataset's
columns (``dataset_schema``). The container's sync
marker comes from the object's Kafka coordinates, not from ``os.urandom``, so the same records
give the same bytes on every replay.
"""
from __future__ import annotations

import hashlib
import re

import orjson

from kpipe.api import FatalError

from .arrowtypes import Unfit
from .base import EncodeError, Writer, as_row, json_default

__all__ = ["AvroWriter", "infer_schema", "dataset_schema", "remember_schema", "load_schema", "sync_marker",
           "require_zstd_codec", "CODECS"]

CODECS = {"none": "null", "gzip": "deflate", "zstd": "zstandard"}
"""kpipe's ``compression`` -> the Avro codec. gzip and Avro's deflate are the same algorithm;
Avro has no gzip codec, so gzip means deflate inside the container."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BAD = re.compile(r"[^A-Za-z0-9_]")
_BLOCK = 256 * 1024  # bytes of records per container block
_KNOWN = {type(None), bool, int, float, str, bytes, bytearray, list, tuple, dict}


def require_zstd_codec() -> None:
    """fastavro's zstandard codec uses the standard library's ``compression.zstd`` (Python 3.14)
    or its backport, not the ``zstandard`` package the text formats use."""
    try:
        from compression import zstd  # noqa: F401
    except ImportError:
        try:
            from backports import zstd  # noqa: F401
        except ImportError:
            raise FatalError('avro with compression zstd needs backports.zstd; run: pip install "kpipe[zstd]"') from None


def load_schema(value, spec_file: str = "") -> dict:
    """The writer schema from ``avro_schema``: inline, or an .avsc file relative to the spec file."""
    if isinstance(value, str):
        # The same guarded reader as the deserializers' schemas: a FIFO, a huge or a too-deep
        # file is one clear error, never a hang.
        from kpipe.validation import read_json_file
        value = read_json_file(value, spec_file, "avro_schema")[1]
    from fastavro import parse_schema
    try:
        parse_schema(value)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise FatalError(f"avro_schema: not a valid Avro schema: {exc}") from None
    return value


def sync_marker(seed: str) -> bytes:
    """16 bytes derived from ``seed`` (the object's Kafka coordinates)."""
    return hashlib.blake2b(seed.encode(), digest_size=16).digest()


class _Target:
    """What fastavro writes to: only ``write`` and ``flush``. Not seekable, so fastavro never
    tries to append to what it finds there."""

    __slots__ = ("write",)

    def __init__(self, out):
        self.write = out.write

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return 0


# -- schema inference ------------------------------------------------------------------------


def _names(keys) -> dict | None:
    """key -> Avro field name, or None when every key already is a valid, distinct name."""
    if all(_NAME.match(k) for k in keys):
        return None
    out, used = {}, set()
    for k in keys:
        name = k if _NAME.match(k) else _BAD.sub("_", k)
        if not name or name[0].isdigit():
            name = "_" + name
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        out[k] = name
    return out


class _Inferrer:
    def __init__(self):
        self.record_names: set[str] = set()

    def union(self, values: list, name: str):
        """The Avro union for a field that held ``values``; also returns the value converter
        (None when values pass through unchanged)."""
        kinds = set(map(type, values))
        branches: list = ["null"]
        convert = None
        if bool in kinds:
            branches.append("boolean")
        if int in kinds:
            # Always long, even for an integer past 64 bits: Avro has no type that holds one
            # exactly, and a double would round it silently; the writer refuses that record.
            branches.append("long")
        if float in kinds:
            branches.append("double")
        if str in kinds:
            branches.append("string")
        if kinds & {bytes, bytearray}:
            branches.append("bytes")
        if list in kinds or tuple in kinds:
            items = [x for v in values if type(v) in (list, tuple) for x in v]
            item_schema, item_convert = self.union(items, name + "_item")
            branches.append({"type": "array", "items": item_schema})
            if item_convert is not None:
                convert = _list_converter(item_convert)
        if dict in kinds:
            record, record_convert = self.record([v for v in values if type(v) is dict], name)
            branches.append(record)
            if record_convert is not None:
                convert = _merge(convert, record_convert)
        if kinds - _KNOWN and "string" not in branches:
            # A type no deserializer produces: fastavro rejects the record that holds it
            # when it is written, which names the record.
            branches.append("string")
        return branches, convert

    def record(self, rows: list, name: str):
        keys: dict[str, None] = {}
        for row in rows:
            for k in row:
                keys.setdefault(k, None)
        names = _names(keys)
        record_name = _BAD.sub("_", name)
        while record_name in self.record_names:
            record_name += "_"
        self.record_names.add(record_name)
        fields, converters = [], {}
        for k in keys:
            field = names[k] if names else k
            schema, convert = self.union([row.get(k) for row in rows], f"{name}_{field}")
            fields.append({"name": field, "type": schema, "default": None})
            if field != k:  # the record's own key, so a dataset's later files name it the same
                fields[-1]["kpipe_key"] = k
            if convert is not None:
                converters[k] = convert
        schema = {"type": "record", "name": record_name, "fields": fields}
        if names is None and not converters:
            return schema, None
        return schema, _record_converter(names, converters)


def _list_converter(item_convert):
    def convert(value):
        if type(value) in (list, tuple):
            return [item_convert(x) for x in value]
        return value
    return convert


def _record_converter(names: dict | None, converters: dict):
    def convert(value):
        if type(value) is not dict:
            return value
        out = {}
        for k, v in value.items():
            f = converters.get(k)
            out[names[k] if names else k] = f(v) if f is not None else v
        return out
    return convert


def _merge(first, second):
    if first is None:
        return second
    return lambda v: second(first(v))


def infer_schema(values: list) -> tuple[dict, object]:
    """(schema, converter) for ``values``; the converter (or None) rewrites a row's keys when
    some are not valid Avro names."""
    inferrer = _Inferrer()
    schema, convert = inferrer.record([as_row(v) for v in values], "Record")
    schema["namespace"] = "kpipe"
    return schema, convert


def _fits(schema: dict, values: list) -> bool:
    """Every record of ``values`` can be written with ``schema``."""
    from fastavro import parse_schema
    from fastavro.validation import validate_many

    try:
        return validate_many([as_row(v) for v in values], parse_schema(schema), raise_errors=False)
    except Exception:  # a schema fastavro cannot parse: infer instead
        return False


# -- the writer ------------------------------------------------------------------------------


class AvroWriter(Writer):
    def __init__(self, out, compression: str = "none", level: int | None = None, seed: str = "",
                 schema: dict | None = None, preferred: dict | None = None, dataset: dict | None = None,
                 remembered: bool = False):
        if compression not in CODECS:
            raise ValueError(f"avro cannot use compression {compression!r}; use one of {', '.join(CODECS)}")
        self.out = out
        self.codec = CODECS[compression]
        self.level = level
        self.seed = seed
        self.given = schema
        self.preferred = preferred if isinstance(preferred, dict) and preferred.get("type") == "record" else None
        self.dataset = dataset
        self.remembered = remembered  # ``schema`` is a dataset's remembered one (remember_schema)
        self.writer = None
        self.convert = None
        self.check_ints = False
        self.fields = None  # a remembered schema's top-level keys: fastavro drops any other field

    def _open(self, values: list) -> None:
        from fastavro import parse_schema
        from fastavro.write import Writer as FastavroWriter

        if self.given is not None:
            schema = self.given
            if self.remembered:
                self.convert = _key_converter(schema)
                self.fields = {_field_key(f) for f in schema["fields"]}
        elif self.preferred is not None and (self.dataset is not None or _fits(self.preferred, values)):
            schema = self.preferred  # one declared schema for the dataset: a record that does not fit is bad
        elif self.dataset is not None:
            schema, self.convert = dataset_schema(self.dataset)
        else:
            schema, self.convert = infer_schema(values)
        # A double or float branch would take an integer past 64 bits and round it: check for
        # them, but only when the schema has such a branch (no cost for the others).
        self.check_ints = _has_float_branch(schema)
        self.writer = FastavroWriter(_Target(self.out), parse_schema(schema), codec=self.codec,
                                     sync_interval=_BLOCK, sync_marker=sync_marker(self.seed),
                                     compression_level=self.level)

    def write(self, values: list) -> None:
        if self.writer is None:
            try:
                self._open(values)
            except RecursionError:  # inferring a schema for nesting deeper than Python's stack
                raise EncodeError("cannot write as Avro: nested too deep to infer a schema",
                                  max(range(len(values)), key=lambda i: _depth(values[i]))) from None
        if self.fields is not None:
            _check_keys(values, self.fields)
        write, convert = self.writer.write, self.convert
        check_ints = self.check_ints
        if check_ints:
            try:  # one C pass: every integer within 53 bits, so none past 64 (else look per record)
                orjson.dumps(values, default=json_default, option=orjson.OPT_STRICT_INTEGER)
                check_ints = False
            except TypeError:  # orjson.JSONEncodeError
                pass
        for i, v in enumerate(values):
            row = as_row(v)
            if check_ints and _has_big_int(row):
                raise EncodeError("cannot write as Avro: an integer past 64 bits (Avro's long); "
                                  "a double would round it", i)
            try:
                write(convert(row) if convert is not None else row)
            except Unfit as exc:
                raise EncodeError(f"cannot write as Avro: {exc}", i) from None
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
                raise EncodeError(f"cannot write as Avro: {type(exc).__name__}: {exc}", i) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()


def _check_keys(values: list, fields: set) -> None:
    """``EncodeError`` at the first record the remembered schema has left out (``remember_schema``):
    a top-level key it lacks, or a key anywhere that is not UTF-8 text (orjson refuses those in
    one C pass; only then is each record looked at). A deeper record left out has a field whose
    type is shallower than its value, which fastavro refuses."""
    for i, v in enumerate(values):
        if type(v) is dict and not v.keys() <= fields:
            extra = next(k for k in v if k not in fields)
            raise EncodeError(f"cannot write as Avro: the dataset's schema has no field for {extra!r} "
                              "(a key that is not UTF-8 text, or nesting too deep to infer)", i)
    try:
        orjson.dumps(values, default=json_default)
        return
    except TypeError:  # orjson.JSONEncodeError: a bad key, too deep, or only a value orjson lacks
        pass
    for i, v in enumerate(values):
        if not _keys_ok(v):
            raise EncodeError("cannot write as Avro: a key that is not UTF-8 text", i)


# -- a dataset's remembered writer schema --------------------------------------------------------

_PRIMITIVES = ("null", "boolean", "long", "double", "string", "bytes")
_INFER_DEPTH = 150  # deeper records stay out of an inferred schema: the writer reports them


def remember_schema(old: dict | None, values: list) -> dict:
    """The dataset's inferred writer schema ``old`` widened to hold ``values``: fields appended,
    union branches added, never removed, so Avro's schema resolution reads every earlier file
    with the newest schema (a new field's default is null). A record no stored schema can hold
    (a key that is not UTF-8 text, nesting past what inference or the state's JSON takes) stays
    out: the writer reports it as a bad record (``AvroWriter`` refuses a key the schema lacks)."""
    try:
        new = _storable_schema(values)
    except (RecursionError, TypeError, ValueError):
        new = _storable_schema([v for v in values if _inferable(v)])
    if old is None:
        return new
    merged = _merge_record(old, new)
    _unique_names(merged, set())
    return merged


def _storable_schema(values: list) -> dict:
    """``infer_schema``'s schema of ``values``, checked to fit the state document (orjson: valid
    UTF-8 keys, at most 255 levels with the document's own); raises otherwise."""
    new, _ = infer_schema(values)
    orjson.dumps({"avro": new})
    return new


def _inferable(value) -> bool:
    if _depth(value) > _INFER_DEPTH or not _keys_ok(value):
        return False
    try:
        _storable_schema([value])
    except (RecursionError, TypeError, ValueError):
        return False
    return True


def _keys_ok(value) -> bool:
    """Every key in ``value`` is valid UTF-8 text (iteratively)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            for k in v:
                if type(k) is not str:
                    return False
                if not k.isascii():
                    try:
                        k.encode()
                    except UnicodeEncodeError:
                        return False
            stack.extend(v.values())
        elif type(v) in (list, tuple):
            stack.extend(v)
    return True


def _field_key(f: dict) -> str:
    return f.get("kpipe_key", f["name"])


def _merge_record(a: dict, b: dict) -> dict:
    fields = [dict(f) for f in a["fields"]]
    index = {_field_key(f): i for i, f in enumerate(fields)}
    names = {f["name"] for f in fields}
    for f in b["fields"]:
        k = _field_key(f)
        if k in index:
            fields[index[k]]["type"] = _merge_union(fields[index[k]]["type"], f["type"])
            continue
        f = dict(f)
        if f["name"] in names:
            base, n = f["name"], 2
            while f["name"] in names:
                f["name"], n = f"{base}_{n}", n + 1
            f["kpipe_key"] = k
        names.add(f["name"])
        index[k] = len(fields)
        fields.append(f)
    return {**a, "fields": fields}


def _merge_union(a: list, b: list) -> list:
    def branch(u, kind):
        return next((x for x in u if isinstance(x, dict) and x.get("type") == kind), None)

    out: list = [p for p in _PRIMITIVES if p in a or p in b]
    arrays = branch(a, "array"), branch(b, "array")
    if arrays[0] and arrays[1]:
        out.append({"type": "array", "items": _merge_union(arrays[0]["items"], arrays[1]["items"])})
    elif arrays[0] or arrays[1]:
        out.append(arrays[0] or arrays[1])
    records = branch(a, "record"), branch(b, "record")
    if records[0] and records[1]:
        out.append(_merge_record(records[0], records[1]))
    elif records[0] or records[1]:
        out.append(records[0] or records[1])
    return out


def _unique_names(schema, used: set) -> None:
    """Give each record of ``schema`` a name no other record has (the first one keeps its own)."""
    if isinstance(schema, list):
        for x in schema:
            _unique_names(x, used)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            while schema["name"] in used:
                schema["name"] += "_"
            used.add(schema["name"])
            for f in schema["fields"]:
                _unique_names(f["type"], used)
        elif schema.get("type") == "array":
            _unique_names(schema["items"], used)


def _key_converter(schema: dict):
    """A row converter renaming keys to the remembered schema's field names; None when no field
    was renamed."""
    if "kpipe_key" not in orjson.dumps(schema).decode():
        return None

    def union(u):
        rec = next((x for x in u if isinstance(x, dict) and x.get("type") == "record"), None)
        arr = next((x for x in u if isinstance(x, dict) and x.get("type") == "array"), None)
        rec_c = record(rec) if rec else None
        arr_c = union(arr["items"]) if arr else None

        def convert(v):
            if type(v) is dict and rec_c is not None:
                return rec_c(v)
            if (type(v) is list or type(v) is tuple) and arr_c is not None:
                return [arr_c(x) for x in v]
            return v
        return convert

    def record(r):
        by_key = {_field_key(f): (f["name"], union(f["type"]) if isinstance(f["type"], list) else None)
                  for f in r["fields"]}

        def convert(v):
            out = {}
            for k, x in v.items():
                name, c = by_key.get(k, (k, None))
                out[name] = c(x) if c is not None else x
            return out
        return convert

    return record(schema)


# -- the dataset's writer schema --------------------------------------------------------------

_FROM_DATASET = {"bigint": "long", "integer": "int", "smallint": "int", "double": "double", "real": "float",
                 "boolean": "boolean", "text": "string", "json": "string", "bytes": "bytes",
                 "uuid": {"type": "string", "logicalType": "uuid"},
                 "date": {"type": "int", "logicalType": "date"},
                 "time": {"type": "long", "logicalType": "time-micros"},
                 "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
                 "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"}}


def dataset_schema(columns: dict) -> tuple[dict, object]:
    """(writer schema, converter) for a dataset's columns (``kpipe.formats.dataset``): a record
    ``kpipe.Record``, every field nullable (default null), in the dataset's order, so each file
    of the dataset has the same schema, or a wider one after a widening (long to double, a new
    field), which Avro's schema resolution reads old files with. The converter fits each value to
    its type (``arrowtypes``' rules) and renames keys that are not Avro names."""
    used: set = set()

    def record(fields: dict, name: str):
        names = _names(fields)
        record_name = _BAD.sub("_", name)
        while record_name in used:
            record_name += "_"
        used.add(record_name)
        out, converters = [], {}
        for k, t in fields.items():
            field = names[k] if names else k
            avro, conv = of(t, f"{name}_{field}")
            out.append({"name": field, "type": ["null", avro] if avro != "null" else "null", "default": None})
            converters[k] = (field, conv)
        return {"type": "record", "name": record_name, "fields": out}, _fit_record(converters)

    def of(t, name: str):
        if isinstance(t, dict):
            if "struct" in t:
                return record(t["struct"], name)
            item, conv = of(t["list"], name + "_item")
            return {"type": "array", "items": ["null", item] if item != "null" else "null"}, _fit_list(conv)
        if t == "null":
            return "null", _fit_null
        if t.startswith("numeric("):
            p, sc = (int(x) for x in t[len("numeric("):-1].split(","))
            return {"type": "bytes", "logicalType": "decimal", "precision": p, "scale": sc}, _fitter(t)
        return _FROM_DATASET[t], _fitter(t)

    schema, convert = record(columns, "Record")
    schema["namespace"] = "kpipe"
    return schema, convert


def _fitter(t):
    from .arrowtypes import fit_value
    return lambda v: v if v is None else fit_value(v, t)


def _fit_null(v):
    if v is not None:
        raise Unfit("a value where the field has no type yet", 0)
    return v


def _fit_list(item):
    def convert(v):
        if v is None:
            return v
        if type(v) is not list and type(v) is not tuple:
            raise Unfit(f"a {type(v).__name__} where a list belongs", 0)
        return [item(x) for x in v]
    return convert


def _fit_record(converters: dict):
    def convert(v):
        if v is None:
            return v
        if type(v) is not dict:
            raise Unfit(f"a {type(v).__name__} where an object belongs", 0)
        out = {}
        for k, x in v.items():
            found = converters.get(k)
            if found is None:
                raise Unfit(f"the dataset has no field {k!r}", 0)
            out[found[0]] = found[1](x)
        return out
    return convert


def _has_float_branch(schema) -> bool:
    """``schema`` names the primitive type double or float anywhere."""
    if isinstance(schema, str):
        return schema in ("double", "float")
    if isinstance(schema, list):
        return any(map(_has_float_branch, schema))
    if isinstance(schema, dict):
        return any(_has_float_branch(schema.get(k)) for k in ("type", "items", "values")) \
            or any(_has_float_branch(f.get("type")) for f in schema.get("fields") or () if isinstance(f, dict))
    return False


def _depth(value) -> int:
    """How deeply objects and lists nest in ``value`` (iteratively)."""
    best, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        best = max(best, d)
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values())
        elif type(v) in (list, tuple):
            stack.extend((x, d + 1) for x in v)
    return best


def _has_big_int(value) -> bool:
    """An integer outside Avro's long range anywhere in ``value`` (iteratively)."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is int:
            if not _LONG_MIN <= v <= _LONG_MAX:
                return True
        elif t is dict:
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
    return False
