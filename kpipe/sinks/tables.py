"""What the table sinks (delta, iceberg) share: config schema fragments, so their ``mode``,
``key``, ``columns`` and ``evolve`` keys validate and read alike (each sink words only what
differs), and ``records_table``, a batch's records as an Arrow table of the columns such a table
can hold."""
from __future__ import annotations

import errno
import os
import re

from kpipe.formats.base import EncodeError
from kpipe.formats.schema import FORMAT_PROPERTIES

__all__ = ["mode_property", "KEY_PROPERTY", "COLUMNS_PROPERTY", "evolve_property", "UPSERT_NEEDS_KEY",
           "TABLE_DEFAULTS", "untyped", "records_table", "storage_fatal", "storage_error", "remove_empty_dirs"]

# Each write is a table commit (a snapshot or a version, and at least one data file), so the
# runner's 5 s would make a table of small files. Kafka Connect's Iceberg sink commits every
# 5 minutes (iceberg.control.commit.interval-ms = 300000), kafka-delta-ingest every 300 s
# (allowed_latency); a spec's own batch.max_age still wins.
TABLE_DEFAULTS = {"batch": {"max_age": "5m"}}

KEY_PROPERTY = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True,
                "description": "Key columns; required for upsert."}

COLUMNS_PROPERTY = FORMAT_PROPERTIES["columns"] | {
    "description": "Declared column types, name: type (the SQL sinks' names). The deserializer's Avro schema "
                   "and the spec's JSON Schema come first; other fields are inferred from the first batch "
                   "that has them. A value that does not fit its column is a bad record."}

UPSERT_NEEDS_KEY = {"if": {"properties": {"mode": {"const": "upsert"}}, "required": ["mode"]},
                    "then": {"required": ["key"]}}


def mode_property(upsert: str) -> dict:
    """``mode``: append or upsert; ``upsert`` says how this table format keeps one row per key."""
    return {"enum": ["append", "upsert"], "default": "append",
            "description": f"append adds every record; upsert {upsert}"}


def evolve_property(added: str) -> dict:
    """``evolve``: what a record field with no column does; ``added`` names the column it adds."""
    return {"enum": ["add_columns", "fail"], "default": "add_columns",
            "description": f"A record field with no column: add {added}, or fail. Columns are never dropped "
                           "and their types never changed."}


def untyped(t) -> bool:
    """``t`` has a part no value has typed yet: ``null``, a list of it, a struct with no fields or
    with such a field. Delta and Iceberg have no null type, so the column waits (it is left out of
    the table) until a value gives every part a type."""
    if isinstance(t, dict):
        if "struct" in t:
            return not t["struct"] or any(map(untyped, t["struct"].values()))
        return untyped(t["list"])
    return t == "null"


def _empty(v) -> bool:
    """``v`` holds no value a type could come from: null, or lists and objects of only those."""
    if isinstance(v, list):
        return all(map(_empty, v))
    if isinstance(v, dict):
        return all(map(_empty, v.values()))
    return v is None


def records_table(pa, schema: dict, values: list, fmt: str):
    """``values`` as an Arrow table of ``schema``'s typed columns. An untyped column is left out,
    so its values read back null; they must be null or empty (``[]``, ``[null]``, ``{}``), else
    ``EncodeError(index)`` names the record, as do records that do not fit a typed column."""
    from kpipe.formats.parquet import typed_table

    typed = {k: t for k, t in schema.items() if not untyped(t)}
    if len(typed) == len(schema):
        return typed_table(pa, typed, values)
    left = schema.keys() - typed.keys()
    for i, v in enumerate(values):
        if isinstance(v, dict) and not all(_empty(v.get(k)) for k in left):
            raise EncodeError(f"a value no {fmt} column type holds", i)
    return typed_table(pa, typed, [{k: x for k, x in v.items() if k in typed} if isinstance(v, dict) else v
                                   for v in values])


_FATAL_OS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_FATAL_ERRNO = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR}
# delta-rs turns every object store failure into a plain OSError, and pyarrow's S3 client does
# much the same, so past the OSError subclasses only the text (Rust's "(os error N)", the HTTP
# status, S3's error code) tells a refused request from a dropped connection.
_FATAL_TEXT = ("permission denied", "access denied", "accessdenied", "access_denied", "403 forbidden", "nosuchbucket",
               "no_such_bucket", "bucket does not exist",
               "no such bucket", "404 not found", "read-only file system", "no space left", "quota exceeded",
               "invalidaccesskeyid", "signaturedoesnotmatch", "(os error 13)", "(os error 30)", "(os error 28)")
# The names object_store gives its failures, inside an error that wraps one (a DeltaError of a write).
_STORE_TEXT = re.compile(r"generic \w+ error|error performing \w+ |object store", re.IGNORECASE)


def storage_fatal(exc: BaseException) -> bool:
    """A file system or object store failure that a retry cannot fix: permission or credentials
    refused, a missing bucket or directory, a read-only or full file system."""
    if isinstance(exc, _FATAL_OS) or getattr(exc, "errno", None) in _FATAL_ERRNO:
        return True
    text = str(exc).lower()
    return any(w in text for w in _FATAL_TEXT)


def storage_error(exc: BaseException) -> bool:
    """``exc`` is (or wraps) a file system or object store failure."""
    return isinstance(exc, OSError) or bool(_STORE_TEXT.search(str(exc)))


def remove_empty_dirs(path: str, stop: str) -> None:
    """Remove ``path``'s empty parent directories up to (not including) ``stop``: what a probe
    file's write created on a local file system."""
    d = os.path.dirname(path)
    while len(d) > len(stop) and d.startswith(stop):
        try:
            os.rmdir(d)
        except OSError:  # not empty, or not ours
            return
        d = os.path.dirname(d)
