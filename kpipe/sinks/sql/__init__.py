"""The ``postgres`` and ``sql`` sinks: rows plus their offsets in one database transaction."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.spec.units import DURATION_PATTERN

__all__ = ["postgres_plugin", "sql_plugin", "CONFIG_SCHEMA", "COLUMN_TYPES", "METADATA_COLUMNS"]

COLUMN_TYPES = ["bigint", "integer", "smallint", "double", "real", "numeric", "text", "varchar",
                "boolean", "timestamp", "timestamptz", "date", "json", "bytes", "uuid"]
METADATA_COLUMNS = ["_topic", "_partition", "_offset", "_timestamp", "_key"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes records as rows, with each partition's next offset in the same transaction.",
    "properties": {
        "url": {"type": "string", "minLength": 1, "x-secret": True,
                "description": "SQLAlchemy database URL, e.g. postgresql+psycopg://user:${PGPASSWORD}@host:5432/db, "
                               "sqlite:///out.db or mysql+pymysql://user:pw@host/db. The password is never printed."},
        "table": {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$",
                  "description": "Target table, optionally schema-qualified (public.orders)."},
        "mode": {"enum": ["insert", "upsert"], "default": "insert",
                 "description": "insert appends every record; upsert keeps one row per key, the one from the highest offset."},
        "key": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True,
                "description": "Key columns; required for upsert. Created tables get them as primary key."},
        "columns": {
            "description": "auto: one column per top-level field, types inferred (or taken from the deserializer's "
                           "schema). Or a mapping column -> {type, from}: `from` is a dotted field path, default the column name.",
            "default": "auto",
            "oneOf": [
                {"const": "auto"},
                {"type": "object", "minProperties": 1,
                 "additionalProperties": {
                     "type": "object", "additionalProperties": False, "required": ["type"],
                     "properties": {
                         "type": {"type": "string", "pattern": r"^(" + "|".join(COLUMN_TYPES) + r")(\(\d+(,\d+)?\))?$",
                                  "description": "One of " + ", ".join(COLUMN_TYPES) + "; varchar(n), numeric(p,s)."},
                         "from": {"type": "string", "minLength": 1},
                         "nullable": {"type": "boolean", "default": True},
                     }}},
            ],
        },
        "create_table": {"type": "boolean", "default": True,
                         "description": "Create the table if it does not exist."},
        "evolve": {"enum": ["add_columns", "fail"], "default": "add_columns",
                   "description": "A record field with no column: add a nullable column, or fail. Columns are never "
                                  "dropped and types never changed."},
        "metadata_columns": {"type": "array", "uniqueItems": True, "items": {"enum": METADATA_COLUMNS},
                             "description": "Kafka coordinates to store with each row."},
        "offsets_table": {"type": "string", "default": "kpipe_offsets",
                          "pattern": r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$",
                          "description": "Where (group, topic, partition) -> next offset is kept, in the same database."},
        "parse": {"enum": ["client", "server"], "default": "client",
                  "description": "Where the JSON values are parsed. client: kpipe decodes them and sends typed rows. "
                                 "server (PostgreSQL, mode insert, the json deserializer with no validate, "
                                 "key_deserializer or transforms): kpipe only checks them, PostgreSQL parses them "
                                 "(COPY into jsonb, then INSERT ... SELECT): less CPU in kpipe, more in the "
                                 "database. A write the server cannot land exactly as client would goes as client "
                                 "(docs/sinks/postgres.md)."},
        "pool_size": {"type": "integer", "minimum": 1, "default": 2},
        "connect_timeout": {"type": "string", "pattern": DURATION_PATTERN, "default": "10s",
                            "description": "How long opening a connection may take (libpq and PyMySQL connect_timeout)."},
        "statement_timeout": {"type": "string", "pattern": DURATION_PATTERN, "default": "60s",
                              "description": "The longest one statement may run (PostgreSQL statement_timeout; on "
                                             "MySQL/MariaDB the client's read_timeout and write_timeout). A statement "
                                             "that times out is a failed attempt under retry:. 0s turns it off (e.g. "
                                             "behind a pgbouncer that refuses startup options)."},
    },
    "required": ["url", "table"],
    "additionalProperties": False,
    "allOf": [
        {"if": {"properties": {"mode": {"const": "upsert"}}, "required": ["mode"]},
         "then": {"required": ["key"]}},
        {"if": {"properties": {"parse": {"const": "server"}}, "required": ["parse"]},
         "then": {"properties": {"mode": {"const": "insert",
                                          "x-expected": "'insert' (parse: server writes with mode insert only)"}}}},
    ],
}


class _SqlPlugin(SinkPlugin):
    def raw_values(self, config) -> str:
        """``parse: server``: PostgreSQL parses the JSON (``SqlSink`` writes it through jsonb)."""
        return "parse: server" if config.get("parse") == "server" else ""


_CAPS = Capabilities(stores_offsets=True, idempotent_writes=True, deletes=True, alter_offsets=True)

postgres_plugin = _SqlPlugin(
    name="postgres", config_schema=CONFIG_SCHEMA, factory="kpipe.sinks.sql.sink:SqlSink", capabilities=_CAPS, extra="postgres",
    description="PostgreSQL via COPY, offsets in the same transaction (exactly once).")
sql_plugin = _SqlPlugin(
    name="sql", config_schema=CONFIG_SCHEMA, factory="kpipe.sinks.sql.sink:SqlSink", capabilities=_CAPS, extra="sql",
    description="Any SQLAlchemy database (SQLite, MySQL/MariaDB, PostgreSQL), offsets in the same transaction.")
