"""The ``files`` sink: one immutable file per batch, named by its Kafka offsets."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.formats.schema import FORMAT_PROPERTIES, FORMAT_RULES

__all__ = ["plugin", "CONFIG_SCHEMA", "FilesPlugin"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes each batch to a local file named by its Kafka offsets, exactly once.",
    "properties": {
        "path": {"type": "string", "minLength": 1,
                 "description": "Output directory; files go to <path>/<topic>/<partition>/."},
        **FORMAT_PROPERTIES,
        "verbatim": {"type": "boolean", "default": False,
                     "description": "format jsonl with the json deserializer and nothing between: write each "
                                    "value's JSON text as it came (checked, not decoded), instead of decoding and "
                                    "encoding it again; less CPU and memory, and the text keeps its own spelling "
                                    "(see docs/sinks/files.md, Verbatim JSON)."},
        "fsync": {"type": "boolean", "default": True,
                  "description": "fsync each file and its directory before it counts as durable."},
    },
    "required": ["path"],
    "additionalProperties": False,
    "allOf": FORMAT_RULES + [
        {   # verbatim means jsonl
            "if": {"properties": {"verbatim": {"const": True}}, "required": ["verbatim"]},
            "then": {"properties": {"format": {"const": "jsonl"}}},
        },
    ],
}


class FilesPlugin(SinkPlugin):
    def raw_values(self, config) -> str:
        """``verbatim: true``: the sink writes the values' own JSON text, so the runner hands it
        their bytes, checked by the json deserializer without decoding."""
        return "verbatim: true" if config.get("verbatim") else ""


plugin = FilesPlugin(
    name="files",
    config_schema=CONFIG_SCHEMA,
    factory="kpipe.sinks.files.sink:FilesSink",
    capabilities=Capabilities(stores_offsets=True, idempotent_writes=True, alter_offsets=True),
    description=CONFIG_SCHEMA["description"],
)
