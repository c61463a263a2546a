"""The config keys every sink that writes formatted files shares, as JSON Schema fragments.

Imported by the sink descriptors, so it must stay cheap: no format code, no optional packages.
"""
from __future__ import annotations

__all__ = ["FORMAT_PROPERTIES", "FORMAT_RULES", "TEXT_COMPRESSIONS", "PARQUET_COMPRESSIONS"]

TEXT_COMPRESSIONS = ["none", "gzip", "zstd"]
PARQUET_COMPRESSIONS = ["none", "snappy", "gzip", "zstd"]

FORMAT_PROPERTIES = {
    "format": {
        "enum": ["jsonl", "csv", "avro", "parquet"], "default": "jsonl",
        "description": "jsonl: one JSON value per line. csv: a header row (the union of the records' fields), then "
                       "one row per record. avro: an Avro container file, schema inferred from the records or given "
                       "in avro_schema. parquet: a Parquet file (needs the parquet extra).",
    },
    "compression": {
        "enum": ["none", "gzip", "zstd", "snappy"],
        "description": "jsonl and csv: the whole file, none (default), gzip or zstd (the zstd extra). avro: the "
                       "container codec, none (default), gzip (Avro's deflate) or zstd. parquet: the column codec, "
                       "snappy (default), none, gzip or zstd.",
    },
    "compression_level": {
        "type": "integer", "minimum": -7, "maximum": 22,
        "description": "The codec's level: gzip 1-9 (default 1, fast; 6 is gzip's usual default), zstd 1-22 "
                       "(default 3). Ignored by snappy.",
    },
    "avro_schema": {
        "anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}],
        "description": "format avro only: the writer schema, inline or as the path of an .avsc file (relative "
                       "to the spec file). Without it: the value deserializer's Avro schema when every record of "
                       "the file fits it, else one inferred per file (a record with one nullable field per "
                       "top-level key).",
    },
}

FORMAT_RULES = [
    {   # which compressions each format allows
        "if": {"properties": {"format": {"const": "parquet"}}, "required": ["format"]},
        "then": {"properties": {"compression": {"enum": PARQUET_COMPRESSIONS}}},
        "else": {"properties": {"compression": {"enum": TEXT_COMPRESSIONS}}},
    },
    {   # avro_schema means format avro
        "if": {"required": ["avro_schema"]},
        "then": {"properties": {"format": {"const": "avro"}}, "required": ["format"]},
    },
]
