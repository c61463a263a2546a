"""The ``http`` sink: POSTs each batch (in chunks) to an HTTP endpoint or webhook.

Only the descriptor lives here, so ``kpipe validate`` and ``kpipe plugins`` never import the
sink itself (``kpipe_http.sink``).
"""
from kpipe.api import Capabilities, SinkPlugin

__all__ = ["plugin", "CONFIG_SCHEMA", "METADATA_FIELDS"]

METADATA_FIELDS = ["topic", "partition", "offset", "key", "timestamp"]

CONFIG_SCHEMA = {
    "type": "object",
    "description": ("POSTs each batch to an HTTP endpoint as JSON or NDJSON, at least once, with an "
                    "Idempotency-Key header a receiver can drop replays by."),
    "properties": {
        "url": {"type": "string", "pattern": "^https?://", "x-secret": True,
                "description": "The endpoint (http or https). A user:password in it is sent as Basic auth."},
        "format": {"enum": ["json", "ndjson"], "default": "json",
                   "description": 'json: one {"records": [...]} object per request; ndjson: one record per line.'},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "properties": {"Authorization": {"type": "string", "x-secret": True},
                                   "authorization": {"type": "string", "x-secret": True}},
                    "description": "Extra request headers; use ${ENV} or ${file:...} for credentials."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                    "description": "Seconds to wait for a connection and for the response."},
        "compression": {"enum": ["none", "gzip"], "default": "none",
                        "description": "gzip: compress the body and send Content-Encoding: gzip."},
        "max_records_per_request": {"type": "integer", "minimum": 1, "default": 500,
                                    "description": "A batch larger than this is sent in several requests."},
        "metadata": {"type": "array", "items": {"enum": METADATA_FIELDS}, "uniqueItems": True, "default": [],
                     "description": ("Kafka fields to send with each value; with any, a record is "
                                     '{"value": ..., "topic": ..., ...} instead of the bare value.')},
        "idempotency_header": {"type": "string", "minLength": 1, "default": "Idempotency-Key",
                               "description": "The header that carries the request's idempotency key."},
        "idempotency_prefix": {"type": "string", "default": "",
                               "description": "Prepended to every idempotency key (e.g. the pipeline's name)."},
    },
    "required": ["url"],
    "additionalProperties": False,
}

plugin = SinkPlugin(
    name="http",
    config_schema=CONFIG_SCHEMA,
    factory="kpipe_http.sink:HttpSink",
    # At least once: a receiver that ignores Idempotency-Key stores a replay twice, and kpipe
    # cannot know what an arbitrary endpoint does. No offsets are kept at the destination.
    capabilities=Capabilities(stores_offsets=False, idempotent_writes=False, alter_offsets=True),
    description=CONFIG_SCHEMA["description"],
)
