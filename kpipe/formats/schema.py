"""The config keys every sink that writes formatted files shares, as JSON Schema fragments.

Imported by the sink descriptors, so it must stay cheap: no format code, no optional packages.
"""
from __future__ import annotations

__all__ = ["FORMAT_PROPERTIES", "FORMAT_RULES", "COLUMN_TYPE", "TEXT_COMPRESSIONS", "PARQUET_COMPRESSIONS"]

TEXT_COMPRESSIONS = ["none", "gzip", "zstd"]
PARQUET_COMPRESSIONS = ["none", "snappy", "gzip", "zstd"]

COLUMN_TYPE = {
    "type": "string",
    "pattern": r"^(bigint|integer|smallint|double|real|boolean|text|json|timestamp|timestamptz|date|time|bytes|uuid"
               r"|varchar\(\d+\)|numeric(\(\d+(,\s*\d+)?\))?)$",
    "x-expected": "a column type: bigint, integer, smallint, double, real, numeric(p,s), boolean, text, "
                  "varchar(n), json, timestamp, timestamptz, date, time, bytes or uuid",
}

FORMAT_PROPERTIES = {
    "format": {
        "enum": ["jsonl", "csv", "avro", "parquet"], "default": "jsonl",
        "description": "jsonl: one JSON value per line. csv: a header row (the dataset's fields in the order they "
                       "first appeared), then one row per record. avro: an Avro container file, with avro_schema, the "
                       "deserializer's Avro schema, or the dataset's remembered schema. parquet: a Parquet file with "
                       "the dataset's column types (needs the parquet extra).",
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
    "columns": {
        "type": "object",
        "additionalProperties": {
            "anyOf": [COLUMN_TYPE,
                      {"type": "object", "properties": {"type": COLUMN_TYPE},
                       "required": ["type"], "additionalProperties": False}]},
        "description": "format parquet or avro (csv: only the column order): declared column types, name: type "
                       "(the SQL sinks' names: "
                       "bigint, integer, smallint, double, real, numeric(p,s), boolean, text, varchar(n), json, "
                       "timestamp, timestamptz, date, time, bytes, uuid). Every file of the dataset carries them; a value "
                       "that does not fit is a bad record. The deserializer's Avro schema and the spec's JSON Schema "
                       "(validate) come first; columns declares the fields they leave out. Other fields are inferred "
                       "and remembered (see One schema per dataset).",
    },
    "avro_schema": {
        "anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}],
        "description": "format avro only: the writer schema, inline or as the path of an .avsc file (relative "
                       "to the spec file). Without it: the value deserializer's Avro schema (a record that does not "
                       "fit it is a bad record), else one derived from the declared columns, else one inferred and "
                       "remembered for the whole output (a record with one nullable field per top-level key), "
                       "only ever widened.",
    },
}

FORMAT_RULES = [
    {   # which compressions each format allows
        "if": {"properties": {"format": {"const": "parquet"}}, "required": ["format"]},
        "then": {"properties": {"compression": {"enum": PARQUET_COMPRESSIONS}}},
        "else": {"properties": {"compression": {"enum": TEXT_COMPRESSIONS}}},
    },
    {   # columns means a format whose files carry a schema
        "if": {"required": ["columns"]},
        "then": {"properties": {"format": {"enum": ["csv", "avro", "parquet"]}}, "required": ["format"]},
    },
    {   # avro_schema means format avro
        "if": {"required": ["avro_schema"]},
        "then": {"properties": {"format": {"const": "avro"}}, "required": ["format"]},
    },
]
