"""The ``iceberg`` sink: an Apache Iceberg table (pyiceberg), each partition's next offset in the
summary of the same snapshot as its rows, exactly once."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.spec.units import DURATION_PATTERN

from ..tables import (COLUMNS_PROPERTY, KEY_PROPERTY, TABLE_DEFAULTS, UPSERT_NEEDS_KEY, evolve_property,
                      mode_property)

__all__ = ["plugin", "CONFIG_SCHEMA"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes records to an Iceberg table; each commit's snapshot summary carries the group's next "
                   "offsets (kpipe.offsets.<group>), and the commit is a compare-and-set on the table's snapshot.",
    "properties": {
        "catalog": {
            "type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
            "x-secret": True,
            "description": "pyiceberg catalog properties, passed through unchanged (type: sql, uri, warehouse, "
                           "s3.endpoint, ...), or name: <catalog> to use ~/.pyiceberg.yaml. The embedded setup: type: sql, "
                           "uri: sqlite:///catalog.db, warehouse: file:///path/to/warehouse."},
        "table": {"type": "string", "pattern": r"^[^.\s]+(\.[^.\s]+)+$",
                  "description": "namespace.table; created (with its namespace) if missing and create_table is true."},
        "create_table": {"type": "boolean", "default": True, "description": "Create the table if it does not exist."},
        "partition_by": {
            "type": "array", "items": {
                "type": "object", "required": ["field"], "additionalProperties": False,
                "properties": {"field": {"type": "string", "minLength": 1},
                               "transform": {"type": "string", "default": "identity",
                                             "pattern": r"^(identity|year|month|day|hour|bucket\[\d+\]|truncate\[\d+\])$"}}},
            "description": "The partition spec of a table kpipe creates (an existing table keeps its own)."},
        "mode": mode_property("keeps one row per key (copy-on-write: delete the batch's keys, append their last "
                              "values); with tombstones: delete a tombstone deletes its key's rows."),
        "key": KEY_PROPERTY,
        "columns": COLUMNS_PROPERTY,
        "evolve": evolve_property("an optional column (a schema update)"),
        "keep_snapshots": {"type": "integer", "minimum": 1, "default": 100,
                           "description": "housekeeping expires snapshots beyond the newest this many that are also "
                                          "older than max_snapshot_age; those holding a group's current offsets stay."},
        "max_snapshot_age": {"type": ["string", "null"], "pattern": DURATION_PATTERN, "default": "24h",
                             "description": "Snapshots younger than this are never expired; null: never expire."},
    },
    "required": ["catalog", "table"],
    "additionalProperties": False,
    **UPSERT_NEEDS_KEY,
}

plugin = SinkPlugin(
    name="iceberg", config_schema=CONFIG_SCHEMA, factory="kpipe.sinks.iceberg.sink:IcebergSink", extra="iceberg",
    capabilities=Capabilities(stores_offsets=True, deletes=True, alter_offsets=True),
    defaults=TABLE_DEFAULTS,
    description="Apache Iceberg table (pyiceberg), offsets in the snapshot summary of the same commit (exactly once).")
