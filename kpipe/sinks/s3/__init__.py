"""The ``s3`` sink: objects named by Kafka offsets, paths evaluated per record, exactly once."""
from kpipe.api import Capabilities, SinkPlugin
from kpipe.formats.schema import FORMAT_PROPERTIES, FORMAT_RULES
from kpipe.spec.units import SIZE_PATTERN

__all__ = ["plugin", "CONFIG_SCHEMA", "PATH_PATTERN", "MAX_IN_FLIGHT"]

# Writes at once, each for other partitions: an upload waits on the network, not the CPU, so
# the next batches go up while one write waits (Redpanda Connect's aws_s3 max_in_flight is 64).
MAX_IN_FLIGHT = 4

# What kpipe.paths.PathTemplate accepts, roughly, so `kpipe validate` catches typos; the
# template compiler has the last word (and the exact message) when the sink starts.
PATH_PATTERN = (r"^([^{}]|\{(topic|partition|offset|key|timestamp|timestamp:[^{}]+|value(\.[^{}.]+)+)\})*$")

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Writes each batch to S3 objects named by Kafka offsets, exactly once; paths evaluated per record.",
    "properties": {
        "bucket": {"type": "string", "minLength": 3, "maxLength": 63, "pattern": r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
                   "x-expected": "an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens",
                   "description": "The bucket; it must exist. kpipe keeps its offsets under <prefix>/_kpipe/ in it."},
        "prefix": {"type": ["string", "null"], "default": "",
                   "description": "Key prefix for everything this pipeline writes (no leading or trailing / needed). "
                                  "One pipeline per prefix: the offsets live under it."},
        # null too: an unset ${S3_ENDPOINT:-} substitutes to an empty, i.e. null, YAML value
        "endpoint_url": {"type": ["string", "null"], "default": "", "pattern": r"^(https?://.+)?$",
                         "description": "S3-compatible endpoint (MinIO, Ceph, moto), e.g. http://127.0.0.1:9000. "
                                        "Empty: AWS S3. Credentials always come from boto3's default chain."},
        "region": {"type": ["string", "null"], "default": "",
                   "description": "Region of the bucket, e.g. eu-west-1. Empty: boto3's default (AWS_REGION, "
                                  "~/.aws/config)."},
        **FORMAT_PROPERTIES,
        "path": {"type": "string", "pattern": PATH_PATTERN,
                 "x-expected": "a path template of literal text and {topic}, {partition}, {offset}, {key}, "
                               "{timestamp:<strftime>} or {value.<field>} fields",
                 "description": "Where each record goes below the prefix, evaluated per record from its own data and "
                                "Kafka timestamp (UTC), e.g. \"{topic}/dt={timestamp:%Y-%m-%d}/country={value.country}\". "
                                "Default {topic}/{partition} (layout kpipe) or partition={partition} "
                                "(layout kafka-connect, where it replaces Connect's encoded partition)."},
        "layout": {"enum": ["kpipe", "kafka-connect"], "default": "kpipe",
                   "description": "kpipe: <prefix>/<path>/<topic>+<partition>+<first>+<last>.<ext>. kafka-connect: "
                                  "<prefix>/<topics_dir>/<topic>/<path>/<topic>+<partition>+<start>.<ext>, the names "
                                  "Confluent's S3 sink writes."},
        "topics_dir": {"type": "string", "default": "topics",
                       "description": "layout kafka-connect: Connect's topics.dir."},
        "offset_pad_width": {"type": "integer", "minimum": 1, "default": 10,
                             "description": "layout kafka-connect: Connect's filename.offset.zero.pad.width."},
        "part_size": {"anyOf": [{"type": "integer", "minimum": 5 * 1024 * 1024},
                                {"type": "string", "pattern": SIZE_PATTERN}],
                      "default": "8MiB",
                      "description": "Objects larger than this go up as a multipart upload in parts of about this "
                                     "size, and at most one part per object is held in memory. At least 5MiB."},
        "addressing_style": {"enum": ["auto", "path", "virtual"], "default": "auto",
                             "description": "How the bucket appears in URLs; path suits most MinIO and Ceph setups."},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8,
                        "description": "Partitions written in parallel within one write (each partition's batches "
                                       "stay in order)."},
    },
    "required": ["bucket"],
    "additionalProperties": False,
    "allOf": FORMAT_RULES,
}

plugin = SinkPlugin(
    name="s3",
    config_schema=CONFIG_SCHEMA,
    factory="kpipe.sinks.s3.sink:S3Sink",
    capabilities=Capabilities(stores_offsets=True, idempotent_writes=True, max_in_flight=MAX_IN_FLIGHT,
                              alter_offsets=True),
    description=CONFIG_SCHEMA["description"],
    extra="s3",
)
