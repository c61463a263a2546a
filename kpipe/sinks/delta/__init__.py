"""The ``delta`` sink: a Delta Lake table (delta-rs), each partition's next offset in the same
commit as its rows (a ``txn`` action per partition), exactly once."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.formats.schema import FORMAT_PROPERTIES
from kpipe.spec.units import DURATION_PATTERN

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
        "mode": {"enum": ["append", "upsert"], "default": "append",
                 "description": "append adds every record; upsert merges on key (the record from the highest "
                                "offset wins; with tombstones: delete a tombstone deletes its key's row)."},
        "key": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True,
                "description": "Key columns; required for upsert."},
        "partition_by": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True,
                         "description": "Partition columns of a table kpipe creates (an existing table keeps its own)."},
        "columns": FORMAT_PROPERTIES["columns"] | {
            "description": "Declared column types, name: type (the SQL sinks' names). The deserializer's Avro schema "
                           "and the spec's JSON Schema come first; other fields are inferred from the first batch "
                           "that has them. A value that does not fit its column is a bad record."},
        "evolve": {"enum": ["add_columns", "fail"], "default": "add_columns",
                   "description": "A record field with no column: add a nullable column (schema merge), or fail. "
                                  "Columns are never dropped and their types never changed."},
        "checkpoint_every": {"type": "integer", "minimum": 0, "default": 10,
                             "description": "housekeeping writes a checkpoint once this many commits passed the last "
                                            "one (readers then skip replaying the JSON log); 0: never."},
        "vacuum_retention": {"type": ["string", "null"], "pattern": DURATION_PATTERN, "default": None,
                             "description": "housekeeping vacuums files no version younger than this refers to "
                                            "(e.g. 168h), once an hour; unset: never. Time travel past it is lost."},
    },
    "required": ["uri"],
    "additionalProperties": False,
    "if": {"properties": {"mode": {"const": "upsert"}}, "required": ["mode"]},
    "then": {"required": ["key"]},
}

plugin = SinkPlugin(
    name="delta", config_schema=CONFIG_SCHEMA, factory="kpipe.sinks.delta.sink:DeltaSink", extra="delta",
    capabilities=Capabilities(stores_offsets=True, deletes=True, alter_offsets=True),
    description="Delta Lake table (delta-rs), offsets as txn actions in the same commit (exactly once).")
