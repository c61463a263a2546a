"""Columns: what the spec declares or the data implies, their SQL types, and row extraction.

Type mapping (inferred from JSON values, or declared by name):

| kpipe type    | PostgreSQL       | MySQL/MariaDB | SQLite  | inferred from        |
|---------------|------------------|---------------|---------|----------------------|
| bigint        | BIGINT           | BIGINT        | BIGINT  | int                  |
| double        | DOUBLE PRECISION | DOUBLE        | FLOAT   | float (or int+float) |
| boolean       | BOOLEAN          | BOOL          | BOOLEAN | bool                 |
| text          | TEXT             | LONGTEXT      | TEXT    | str, mixed, all null |
| json          | JSONB            | JSON          | JSON TEXT | object, array      |
| timestamptz   | TIMESTAMPTZ      | DATETIME      | DATETIME| (declared, _timestamp) |
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.compiler import compiles

__all__ = ["Column", "infer_columns", "schema_columns", "sql_type", "json_type", "SQLITE_JSON",
           "METADATA_TYPES", "field_getter"]

METADATA_TYPES = {"_topic": "text", "_partition": "integer", "_offset": "bigint",
                  "_timestamp": "timestamptz", "_key": "text"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str                 # a kpipe type name, e.g. "bigint", "varchar(64)"
    path: tuple = ()          # where the value comes from in the record; () for metadata
    nullable: bool = True

    @property
    def base(self) -> str:
        return self.type.split("(", 1)[0]


def _kind(value) -> str | None:
    t = type(value)
    if value is None:
        return None
    if t is bool:
        return "boolean"
    if t is int:
        return "bigint"
    if t is float:
        return "double"
    if t is str:
        return "text"
    if t is dict or t is list:
        return "json"
    return "text"


def infer_columns(records: list, known: set) -> list[Column]:
    """Columns for the top-level fields of ``records`` not in ``known``, in first-seen order."""
    kinds: dict[str, set] = {}
    for r in records:
        if type(r) is not dict or known.issuperset(r):
            continue
        for k, v in r.items():
            if k not in known:
                kinds.setdefault(k, set()).add(_kind(v))
    out = []
    for name, seen in kinds.items():
        seen.discard(None)
        if len(seen) == 1:
            typ = seen.pop()
        elif seen == {"bigint", "double"}:
            typ = "double"
        else:
            typ = "text"  # all null, or mixed: text holds anything
        out.append(Column(name, typ, (name,)))
    return out


_AVRO = {"long": "bigint", "int": "integer", "double": "double", "float": "double", "boolean": "boolean",
         "string": "text", "bytes": "bytes", "enum": "text", "fixed": "bytes", "record": "json",
         "array": "json", "map": "json"}
_AVRO_LOGICAL = {"timestamp-millis": "timestamptz", "timestamp-micros": "timestamptz", "date": "date",
                 "uuid": "uuid", "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp"}
_JSON = {"integer": "bigint", "number": "double", "boolean": "boolean", "string": "text",
         "object": "json", "array": "json"}
_JSON_FORMATS = {"date-time": "timestamptz", "date": "date", "uuid": "uuid"}


def _avro_type(t) -> str:
    if isinstance(t, list):  # a union: ["null", X] is a nullable X; anything wider is json
        rest = [x for x in t if x != "null"]
        return _avro_type(rest[0]) if len(rest) == 1 else "json"
    if isinstance(t, dict):
        logical = t.get("logicalType")
        if logical == "decimal":
            return f"numeric({t.get('precision', 38)},{t.get('scale', 0)})"
        if logical in _AVRO_LOGICAL:
            return _AVRO_LOGICAL[logical]
        return _AVRO.get(t.get("type"), "text") if isinstance(t.get("type"), str) else _avro_type(t.get("type"))
    return _AVRO.get(t, "text")


def _json_type(prop) -> str:
    if not isinstance(prop, dict):
        return "text"
    t = prop.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        t = rest[0] if len(rest) == 1 else None
    if t == "string" and prop.get("format") in _JSON_FORMATS:
        return _JSON_FORMATS[prop["format"]]
    return _JSON.get(t, "text")


def schema_columns(schema) -> list[Column] | None:
    """Columns for the top-level fields a schema declares, in its order, all nullable: an Avro
    record schema, or a JSON Schema object with ``properties``. None for anything else."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "record" and isinstance(schema.get("fields"), list):
        return [Column(f["name"], _avro_type(f["type"]), (f["name"],)) for f in schema["fields"]]
    if isinstance(schema.get("properties"), dict):
        return [Column(name, _json_type(prop), (name,)) for name, prop in schema["properties"].items()]
    return None


def sql_type(kpipe_type: str) -> sa.types.TypeEngine:
    base, _, args = kpipe_type.partition("(")
    nums = [int(a) for a in args.rstrip(")").split(",")] if args else []
    if base == "bigint":
        return sa.BigInteger()
    if base == "integer":
        return sa.Integer()
    if base == "smallint":
        return sa.SmallInteger()
    if base == "double":
        return sa.Double().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
    if base == "real":
        return sa.REAL()
    if base == "numeric":
        return sa.Numeric(*nums)
    if base == "varchar":
        return sa.String(nums[0] if nums else 255)
    if base == "boolean":
        return sa.Boolean()
    if base == "timestamp":
        return sa.DateTime()
    if base == "timestamptz":
        return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    if base == "date":
        return sa.Date()
    if base == "json":
        return json_type()
    if base == "bytes":
        return sa.LargeBinary()
    if base == "uuid":
        return sa.Uuid()
    # MySQL's TEXT holds 65,535 bytes: a longer string could never land. LONGTEXT holds 4 GB.
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


#: How a json column is declared on SQLite: a type name with TEXT in it has TEXT affinity, so the
#: JSON text is stored as it is. A column declared ``JSON`` has NUMERIC affinity: a bare ``123``
#: would be stored as a number and ``2**70`` as the nearest double.
SQLITE_JSON = "JSON TEXT"


class _SqliteJson(sqlite.JSON):
    """SQLite's JSON type, declared ``SQLITE_JSON``."""


@compiles(_SqliteJson, "sqlite")
def _sqlite_json_ddl(_type, _compiler, **_kw) -> str:
    return SQLITE_JSON


def json_type() -> sa.types.TypeEngine:
    """A json column's type, for DDL and for binding: None (a null or missing value) is SQL NULL
    in every dialect, not the JSON text ``null``."""
    return (sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
            .with_variant(_SqliteJson(none_as_null=True), "sqlite"))


def field_getter(path: tuple):
    """A fast function record -> value at ``path`` (None when absent)."""
    if len(path) == 1:
        key = path[0]
        return lambda r: r.get(key) if type(r) is dict else None

    def get(r):
        for k in path:
            if type(r) is not dict:
                return None
            r = r.get(k)
        return r
    return get


def parse_timestamp(value):
    """A datetime from an ISO-8601 string or epoch milliseconds; ValueError otherwise."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed
    raise ValueError(f"not a timestamp: {value!r}")
