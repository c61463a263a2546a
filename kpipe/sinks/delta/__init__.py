"""The ``delta`` sink: a Delta Lake table (delta-rs), each partition's next offset in the same
commit as its rows (a ``txn`` action per partition), exactly once."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.spec.units import DURATION_PATTERN

from ..tables import (COLUMNS_PROPERTY, KEY_PROPERTY, TABLE_DEFAULTS, UPSERT_NEEDS_KEY, evolve_property,
                      mode_property)

__all__ = ["plugin", "CONFIG_SCHEMA"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes records to a Delta Lake table; each commit carries the partitions' next offsets as "
                   "Delta txn actions (exactly once).",
    "properties": {
        "uri": {"type": "string", "minLength": 1,
                "description": "The table: a local path, or s3://bucket/path (also gs://, az://, abfss://). "
                               "Created on the first write if missing."},
        "storage_options": {
            "type": "object", "additionalProperties": {"type": ["string", "null"]},
            "description": "delta-rs object store options, passed through, e.g. AWS_ENDPOINT_URL, AWS_REGION, "
                           "AWS_ALLOW_HTTP. AWS_S3_ALLOW_UNSAFE_RENAME true is refused: two writers could both "
                           "commit one version and lose one commit's offsets (see docs/sinks/delta.md)."},
        "mode": mode_property("merges on key (the record from the highest offset wins; with tombstones: delete a "
                              "tombstone deletes its key's row)."),
        "key": KEY_PROPERTY,
        "partition_by": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True,
                         "description": "Partition columns of a table kpipe creates (an existing table keeps its own)."},
        "columns": COLUMNS_PROPERTY,
        "evolve": evolve_property("a nullable column (schema merge)"),
        "checkpoint_every": {"type": "integer", "minimum": 0, "default": 10,
                             "description": "housekeeping writes a checkpoint once this many commits passed the last "
                                            "one (readers then skip replaying the JSON log); 0: never."},
        "vacuum_retention": {"type": ["string", "null"], "pattern": DURATION_PATTERN, "default": None,
                             "description": "housekeeping vacuums files no version younger than this refers to "
                                            "(e.g. 168h), once an hour; unset: never. Time travel past it is lost."},
    },
    "required": ["uri"],
    "additionalProperties": False,
    **UPSERT_NEEDS_KEY,
}

plugin = SinkPlugin(
    name="delta", config_schema=CONFIG_SCHEMA, factory="kpipe.sinks.delta.sink:DeltaSink", extra="delta",
    capabilities=Capabilities(stores_offsets=True, deletes=True, alter_offsets=True),
    defaults=TABLE_DEFAULTS,
    description="Delta Lake table (delta-rs), offsets as txn actions in the same commit (exactly once).")
