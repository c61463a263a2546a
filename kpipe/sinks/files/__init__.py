"""The ``files`` sink: one immutable file per batch, named by its Kafka offsets."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.formats.schema import FORMAT_PROPERTIES, FORMAT_RULES

__all__ = ["plugin", "CONFIG_SCHEMA"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes each batch to a local file named by its Kafka offsets, exactly once.",
    "properties": {
        "path": {"type": "string", "minLength": 1,
                 "description": "Output directory; files go to <path>/<topic>/<partition>/."},
        **FORMAT_PROPERTIES,
        "fsync": {"type": "boolean", "default": True,
                  "description": "fsync each file and its directory before it counts as durable."},
    },
    "required": ["path"],
    "additionalProperties": False,
    "allOf": FORMAT_RULES,
}

plugin = SinkPlugin(
    name="files",
    config_schema=CONFIG_SCHEMA,
    factory="kpipe.sinks.files.sink:FilesSink",
    capabilities=Capabilities(stores_offsets=True, idempotent_writes=True, alter_offsets=True),
    description=CONFIG_SCHEMA["description"],
)
