"""What is written: records into the bytes of one file or object, in jsonl, csv, avro or parquet.

Kept apart from *where* the bytes go (a local directory, an S3 object), so every destination
shares one implementation of each format. A writer streams into any binary target with
``write(bytes)``: a local temp file, or the part buffer of an S3 multipart upload. Output depends
only on the records, the object's Kafka coordinates and the dataset's schema, never on the
clock or the process, so replaying the same offsets produces byte-identical output.

csv, avro and parquet files of one sink's output share one schema (``dataset``, kept by the sink
through ``schemabook``): ``FileFormat.open(..., dataset=doc)`` writes with it.

    w = open_writer("jsonl", target, "gzip")
    w.write(values)   # a list of records; raises EncodeError(index) for one that cannot be written
    w.close()         # finish the format and the compression; the target stays open
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .base import EncodeError, Writer
from .compression import COMPRESSIONS, SUFFIXES, open_stream, require_zstandard
from .csvfile import CsvWriter, encode_csv
from .dataset import parse_columns
from .jsonl import JsonlWriter, encode_jsonl
from .schemabook import SCHEMA_FORMATS, SchemaBook, SchemaStore

__all__ = ["FORMAT_NAMES", "COMPRESSIONS_FOR", "DEFAULT_COMPRESSION", "EncodeError", "Writer", "FileFormat",
           "open_writer", "extension", "check_available", "encode_jsonl", "encode_csv", "SchemaBook", "SchemaStore"]

FORMAT_NAMES = ("jsonl", "csv", "avro", "parquet")
COMPRESSIONS_FOR = {
    "jsonl": COMPRESSIONS,
    "csv": COMPRESSIONS,
    "avro": ("none", "gzip", "zstd"),              # the container's codec: null, deflate, zstandard
    "parquet": ("none", "snappy", "gzip", "zstd"),  # the column chunks' codec
}
DEFAULT_COMPRESSION = {"jsonl": "none", "csv": "none", "avro": "none", "parquet": "snappy"}
_PARQUET_CODEC_EXT = {"none": "", "snappy": ".snappy", "gzip": ".gz", "zstd": ".zstd"}


def extension(fmt: str, compression: str, style: str = "kpipe") -> str:
    """The file name extension, dot included.

    ``kpipe``: ``.jsonl``, ``.csv`` (plus ``.gz`` or ``.zst``), ``.avro``, ``.parquet``.
    ``kafka-connect``: what Confluent's storage connectors write: ``.json`` instead of
    ``.jsonl``, and ``<codec>.parquet`` (``.snappy.parquet``, ``.gz.parquet``, ``.zstd.parquet``).
    """
    if fmt in ("jsonl", "csv"):
        base = ".json" if fmt == "jsonl" and style == "kafka-connect" else "." + fmt
        return base + SUFFIXES[compression]
    if fmt == "avro":
        return ".avro"
    if fmt == "parquet":
        return (_PARQUET_CODEC_EXT[compression] if style == "kafka-connect" else "") + ".parquet"
    raise ValueError(f"unknown format {fmt!r}")


def check_available(fmt: str, compression: str) -> None:
    """Raise ``FatalError`` with the ``pip install`` that fixes it when a needed package is missing,
    or ``ValueError`` for a format/compression pair that does not exist."""
    if fmt not in COMPRESSIONS_FOR:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMAT_NAMES)}")
    if compression not in COMPRESSIONS_FOR[fmt]:
        raise ValueError(f"format {fmt} cannot use compression {compression!r}; "
                         f"use one of {', '.join(COMPRESSIONS_FOR[fmt])}")
    if fmt == "parquet":
        from .parquet import require_pyarrow
        require_pyarrow()
    elif fmt == "avro" and compression == "zstd":
        from .avro import require_zstd_codec
        require_zstd_codec()
    elif compression == "zstd":
        require_zstandard()


class _Compressed(Writer):
    """A text format writer in front of a compressing stream; closing finishes both."""

    def __init__(self, inner: Writer, stream):
        self.inner = inner
        self.stream = stream

    def write(self, values: list) -> None:
        self.inner.write(values)

    def close(self) -> None:
        self.inner.close()
        self.stream.close()


def open_writer(fmt: str, target, compression: str | None = None, *, level: int | None = None,
                seed: str = "", avro_schema: dict | None = None, value_schema=None,
                dataset_schema: dict | None = None, verbatim: bool = False) -> Writer:
    """A writer of ``fmt`` records into ``target``.

    ``compression`` defaults to the format's own default (``snappy`` for parquet, else none);
    ``level`` to the codec's. ``seed`` identifies the object (its Kafka coordinates) for formats
    that need per-file bytes (Avro's sync marker), so they stay deterministic. ``value_schema``
    is the deserializer's schema, which Avro uses when ``avro_schema`` is not set and every record
    fits it. ``dataset_schema`` (``kpipe.formats.dataset``) is the schema every file of the
    dataset shares: Parquet's column types, Avro's writer schema (unless one is declared), CSV's
    header order. ``verbatim`` (jsonl): the records are raw JSON values, written as they came
    (``encode_verbatim``).
    """
    compression = compression or DEFAULT_COMPRESSION[fmt]
    if fmt in ("jsonl", "csv"):
        stream = open_stream(target, compression, level)
        inner = JsonlWriter(stream, verbatim) if fmt == "jsonl" else CsvWriter(
            stream, columns=list(dataset_schema) if dataset_schema is not None else None)
        return inner if stream is target else _Compressed(inner, stream)
    if fmt == "avro":
        from .avro import AvroWriter
        return AvroWriter(target, compression, level, seed, avro_schema, value_schema, dataset_schema)
    if fmt == "parquet":
        from .parquet import ParquetWriter
        return ParquetWriter(target, compression, level, schema=dataset_schema)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMAT_NAMES)}")


@dataclass(frozen=True)
class FileFormat:
    """A sink's format settings (``format``, ``compression``, ``compression_level``,
    ``avro_schema``, ``columns``; see ``kpipe.formats.schema``), checked once, ready to open
    writers."""

    name: str = "jsonl"
    compression: str = "none"
    level: int | None = None
    avro_schema: Any = None
    columns: Any = None  # declared column types (kpipe.formats.dataset.parse_columns), or None
    verbatim: bool = False  # jsonl of the raw JSON values, as they came (the files sink's verbatim)

    @property
    def has_schema(self) -> bool:
        """Its files carry a schema that every file of the dataset must share."""
        return self.name in SCHEMA_FORMATS

    @classmethod
    def from_config(cls, config: Mapping[str, Any], spec_file: str = "") -> "FileFormat":
        """Raises ``FatalError`` (a missing extra, an unreadable schema) or ``ValueError``."""
        name = config.get("format", "jsonl")
        compression = config.get("compression") or DEFAULT_COMPRESSION[name]
        check_available(name, compression)
        schema = None
        if config.get("avro_schema") is not None:
            from .avro import load_schema
            schema = load_schema(config["avro_schema"], spec_file)
        columns = parse_columns(config.get("columns") or {})
        return cls(name, compression, config.get("compression_level"), schema, columns,
                   bool(config.get("verbatim")) and name == "jsonl")

    def reader_files(self, doc: dict) -> dict[str, bytes]:
        """The files a dataset root holds for readers after a schema change (``doc``, see
        ``SchemaBook``), by name: Parquet's ``_common_metadata`` and ``+schema.parquet``."""
        if self.name != "parquet":
            return {}
        from .parquet import schema_files
        return schema_files(doc["columns"])

    def extension(self, style: str = "kpipe") -> str:
        return extension(self.name, self.compression, style)

    def remember(self, old, values: list, fixed: dict):
        """Avro without declared types: the dataset's inferred writer schema (``old``, or None),
        widened to hold ``values`` (``SchemaBook``'s ``remember``); None for any other case."""
        if self.name != "avro" or self.avro_schema is not None or fixed:
            return None
        from .avro import remember_schema
        return remember_schema(old, values)

    def open(self, target, seed: str = "", value_schema=None, dataset: dict | None = None) -> Writer:
        """A writer into ``target``; ``value_schema`` is a callable returning the deserializer's
        schema (``SinkContext.value_schema``), asked only by formats that use one; ``dataset``
        the dataset's schema document (``SchemaBook.schema_for``)."""
        declared_schema = value_schema() if value_schema is not None and self.name == "avro" else None
        columns = dataset["columns"] if dataset else None
        if self.name == "avro" and dataset and dataset.get("avro"):
            # No declared types: the remembered writer schema, exact unions (long beside double).
            from .avro import AvroWriter
            return AvroWriter(target, self.compression, self.level, seed, dataset["avro"], remembered=True)
        return open_writer(self.name, target, self.compression, level=self.level, seed=seed,
                           avro_schema=self.avro_schema, value_schema=declared_schema,
                           dataset_schema=columns, verbatim=self.verbatim)
