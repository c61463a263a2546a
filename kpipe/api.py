"""The public plugin API: what a sink or deserializer implements, and what the runner promises it.

Contract in one paragraph: the runtime owns offsets, sinks own durability. The runner hands
a sink whole batches of one (topic, partition) each, covering a contiguous range of consumed
offsets ``[start_offset, next_offset)``; one call may hold several batches of a partition, in
offset order, and the sink must apply them in that order. When ``Sink.write`` returns, every batch
it was given is durable (or, with a ``WriteOutcome``, every batch of the partitions it names);
only then does the runner commit ``next_offset``. Every sink method runs on one thread of the
runner's own, never the consumer's and never two at once, so a write can overlap the consuming
of the next batches and a driver bound to its connecting thread still works; a sink declaring
``Capabilities.max_in_flight`` above 1 gets up to that many writes at once, for disjoint
partitions, on as many threads. A sink that
declares ``stores_offsets`` keeps that next offset itself, atomically with the data, and
the runner seeks to it when a partition is assigned; the Kafka commit then only mirrors it.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = [
    "API_VERSION",
    "MIN_API_VERSION",
    "Capabilities",
    "Batch",
    "SinkContext",
    "Sink",
    "Deserializer",
    "Transform",
    "Metadata",
    "DROP",
    "SinkPlugin",
    "DeserializerPlugin",
    "TransformPlugin",
    "KpipeError",
    "RetryableError",
    "BadRecordError",
    "FatalError",
    "OffsetConflict",
    "TopicPartition",
    "PartitionKey",
    "WriteOutcome",
    "HOUSEKEEP_EVERY",
]

API_VERSION = 1
"""The plugin API this kpipe implements. Within one API version, changes only add (a new
optional method with a default, a new ``Capabilities`` flag that defaults to False, a new
keyword argument with a default); anything that removes or changes a meaning raises it. The
promise in full is docs/api.md."""

MIN_API_VERSION = 1
"""The oldest plugin API version this kpipe still loads. When API 2 comes, kpipe keeps loading
API 1 plugins for at least one more minor release, warning that they use a deprecated API."""

PartitionKey = tuple
"""``(topic: str, partition: int)``: how the API names a partition. A plain tuple keeps dict
lookups cheap; unlike confluent_kafka's ``TopicPartition`` it carries no offset."""

TopicPartition = PartitionKey
"""Deprecated: the same as ``PartitionKey``, kept for API version 1. It shares its name with
``confluent_kafka.TopicPartition``, a different thing; use ``PartitionKey``."""

HOUSEKEEP_EVERY = 5.0
"""Seconds between two calls of ``Sink.housekeep`` (Kafka Connect calls its tasks' flush on a
timer in the same way, data or not)."""


# --- errors: a small taxonomy with one meaning each -------------------------------------


class KpipeError(Exception):
    """Base of every error kpipe raises on purpose."""


class RetryableError(KpipeError):
    """A transient failure (connection refused, timeout, throttling).

    Nothing was made durable by the failed call. The runner retries the same batches with
    capped exponential backoff and jitter, and fails closed (exit 3) when its budget runs out.
    Never raise this for bad data.
    """


class BadRecordError(KpipeError):
    """One record cannot be processed: bad bytes, a value that does not fit, a constraint.

    ``index`` is the record's position in the list the plugin was given (for a sink: in the
    batch of ``topic``/``partition``). A deserializer has handled everything before ``index``;
    a sink has made nothing durable. The runner applies the pipeline's error policy to the
    record and hands the sink what remains.
    """

    def __init__(self, message: str, index: int = 0, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None):
        super().__init__(message)
        self.index = index
        self.topic = topic
        self.partition = partition
        self.offset = offset

    @classmethod
    def in_batch(cls, message: str, batch: "Batch", index: int) -> "BadRecordError":
        """The error for record ``index`` of ``batch``; what a sink should raise, since one
        write may hold several batches of the same partition."""
        offset = batch.offset_of(index) if index < len(batch._messages) else None
        return cls(message, index, batch.topic, batch.partition, offset)


class FatalError(KpipeError):
    """Retrying cannot help (misconfiguration, permission denied, disk full). The run stops, exit 2."""


class OffsetConflict(KpipeError):
    """Fencing: another writer has already made these partitions durable past our batch start.

    The listed partitions were NOT written; every other batch in the call IS durable. The
    runner drops what it buffered for them, reloads their offsets from the sink and seeks.
    """

    def __init__(self, partitions: Mapping[TopicPartition, int]):
        self.partitions = dict(partitions)  # (topic, partition) -> the sink's next offset
        super().__init__(
            "another writer is ahead on "
            + ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(self.partitions.items()))
        )


# --- the data a sink sees ---------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a plugin promises; the runner reads these flags instead of branching on names."""

    stores_offsets: bool = False
    """The sink stores each partition's next offset atomically with the data (``load_offsets``)."""
    idempotent_writes: bool = False
    """Writing the same batch twice leaves one copy."""
    deletes: bool = False
    """A tombstone (a record whose value is None) deletes its key (``tombstones: delete``)."""
    max_in_flight: int = 1
    """How many ``write`` calls may run at once, each on its own thread, never two holding the
    same partition, each partition's writes in order. Above 1 the sink must be thread-safe for
    ``write``; its other methods still never run beside a write."""
    alter_offsets: bool = False
    """The sink can move its stored positions on an operator's order (``Sink.alter_offsets``,
    for ``kpipe offsets reset``). Only meaningful with ``stores_offsets``."""

    @property
    def exactly_once(self) -> bool:
        """Offsets kept with the data, or writes that converge when replayed: either way, a
        crash between the write and the commit neither loses nor duplicates a record."""
        return self.stores_offsets or self.idempotent_writes


class Batch:
    """Consumed records of one (topic, partition), covering offsets ``[start_offset, next_offset)``.

    ``values`` holds the deserialized values in offset order. The range is what was consumed,
    so it may be wider than the records (compaction gaps, filtered or skipped records).
    ``offsets``, ``keys``, ``timestamps`` and ``headers`` are built on first access, so a sink
    that does not read them pays nothing.
    """

    __slots__ = ("topic", "partition", "start_offset", "next_offset", "values", "_messages", "nbytes", "_keys")

    def __init__(self, topic: str, partition: int, start_offset: int, next_offset: int,
                 values: list, messages: list, nbytes: int = 0, keys: list | None = None):
        self.topic = topic
        self.partition = partition
        self.start_offset = start_offset
        self.next_offset = next_offset
        self.values = values
        self._messages = messages  # confluent_kafka.Message objects, parallel to values
        self.nbytes = nbytes
        self._keys = keys  # deserialized keys (a key deserializer is set), parallel to values

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return (f"Batch({self.topic}[{self.partition}] {self.start_offset}..{self.next_offset}, "
                f"{len(self.values)} records)")

    def head(self, index: int) -> "Batch":
        """The records before ``index``, covering offsets up to (not including) that record's."""
        stop = self._messages[index].offset()
        return Batch(self.topic, self.partition, self.start_offset, stop, self.values[:index],
                     self._messages[:index], 0, None if self._keys is None else self._keys[:index])

    def without(self, index: int) -> "Batch":
        """The same offset range without the record at ``index`` (a record the policy let go)."""
        def drop(lst):
            return None if lst is None else lst[:index] + lst[index + 1:]
        return Batch(self.topic, self.partition, self.start_offset, self.next_offset,
                     drop(self.values), drop(self._messages), self.nbytes, drop(self._keys))

    def offset_of(self, index: int) -> int:
        return self._messages[index].offset()

    def message(self, index: int) -> Any:
        """The consumed Kafka message of record ``index`` (a ``confluent_kafka.Message``)."""
        return self._messages[index]

    @property
    def last_offset(self) -> int:
        """The last offset the batch covers (``next_offset - 1``)."""
        return self.next_offset - 1

    @property
    def offsets(self) -> list[int]:
        return [m.offset() for m in self._messages]

    @property
    def keys(self) -> list:
        """The deserialized keys with a ``key_deserializer``, else the raw key bytes (or None)."""
        if self._keys is not None:
            return self._keys
        return [m.key() for m in self._messages]

    @property
    def timestamps(self) -> list[int | None]:
        """Kafka timestamps in milliseconds since the epoch (None when the broker has none)."""
        return [ts if kind else None for kind, ts in (m.timestamp() for m in self._messages)]

    @property
    def headers(self) -> list[list[tuple[str, bytes]] | None]:
        return [m.headers() for m in self._messages]


@dataclass(frozen=True)
class WriteOutcome:
    """What a ``Sink.write`` made durable, when it was not everything it was given.

    ``durable`` names the partitions whose batches in the call are all durable; the others
    are not (none of their records may be durable in a way a replay would duplicate). The
    runner commits the named ones and writes the rest again, with the retry budget of a
    ``RetryableError``. ``None`` (or returning ``None`` from ``write``) means all of them.
    ``reason`` says why the rest is not durable, for the log.
    """

    durable: frozenset | None = None
    reason: str = ""


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know about the pipeline it serves."""

    pipeline: str
    group: str
    spec_file: str = ""
    log: Any = None  # a logging.Logger
    tombstones: str = "skip"
    """``delete``: a record whose value is None deletes its key (only for ``Capabilities.deletes``)."""
    value_schema: Callable[[], Mapping[str, Any] | None] = lambda: None
    """The value deserializer's current ``schema()``: Avro or JSON Schema, or None."""


class Sink(abc.ABC):
    """A destination. Subclasses implement ``write``; the rest has safe defaults."""

    def __init__(self, config: Mapping[str, Any], context: SinkContext):
        self.config = config
        self.context = context

    def open(self) -> None:
        """Connect and prepare. Raising ``RetryableError`` means "try again later"."""

    def load_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return the next offset to consume for each partition the sink has data for.

        Called on assignment, only for sinks with ``stores_offsets``. Partitions missing from
        the result fall back to the group's committed offset, then to ``source.start``.
        """
        return {}

    @abc.abstractmethod
    def write(self, batches: Sequence[Batch]) -> WriteOutcome | None:
        """Make every batch durable. Returning means durable; the runner then commits.

        Return a ``WriteOutcome`` naming the partitions made durable when only some were (the
        runner commits those and writes the others again); ``None`` means all of them.
        Raise ``RetryableError`` if nothing became durable and a retry may help,
        ``OffsetConflict`` for fenced partitions (all others durable), ``BadRecordError``
        for one bad record, ``FatalError`` otherwise. Writing a batch again must be harmless.
        """

    def alter_offsets(self, group: str, positions: Mapping[TopicPartition, int],
                      expected: Mapping[TopicPartition, int | None]) -> None:
        """Store ``positions`` (the next offset to consume, per partition) as if a write had
        ended there; returning means they are durable. ``kpipe offsets reset`` calls it with no
        pipeline running, only for sinks with ``Capabilities.alter_offsets``.

        ``group`` is the pipeline's consumer group (``SinkContext.group``); a sink that keys
        positions by group moves that group's. ``expected`` is each partition's position as the
        caller last read it (None: none stored): the same fence as a write's, so when any
        partition's stored position differs, raise ``OffsetConflict`` naming the positions found
        and change nothing (as far as the store allows; say in the docs what may have moved).
        A position before the stored one means the next run writes that range again.
        """
        raise FatalError(f"the {type(self).__name__} sink cannot move its stored offsets")

    def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """Forget any state kept for partitions this instance no longer owns."""

    def housekeep(self) -> None:
        """Background duties (sweeping leftovers, keep-alives), also while no data arrives.

        Called about every ``HOUSEKEEP_EVERY`` seconds on the sink's thread, never during a
        write. It must not make records durable or move a stored offset. What it raises is
        logged as a warning and never stops the run; the next call tries again.
        """

    def close(self) -> None:
        """Release resources. Must be safe to call twice and after a failed ``open``."""


class Deserializer(abc.ABC):
    """Turns raw Kafka values (or keys) into Python values, a whole list at a time."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    @abc.abstractmethod
    def deserialize(self, raw: list[bytes | None]) -> list[Any]:
        """Return one value per raw value, in order. ``None`` (a tombstone) stays ``None``.

        Raise ``BadRecordError(index=i)`` at the first value that cannot be decoded; the
        runner keeps the values before ``i`` and applies the error policy to record ``i``.
        A deserializer must be pure: the runner may decode the values before ``i`` again.
        """

    def schema(self) -> Mapping[str, Any] | None:
        """The writer's schema of the values decoded so far, if the format has one.

        An Avro schema (a parsed ``.avsc``: a dict with ``"type": "record"``) or a JSON Schema
        (a dict with ``"$schema"`` or ``"properties"``); None when unknown. Sinks use it to
        create tables and write typed files. May change after ``deserialize`` (a registry
        deserializer learns schemas by id as values arrive).
        """
        return None


class Metadata:
    """The Kafka side of consecutive records of one partition: keys, headers, timestamps,
    offsets. Built lazily from the consumed messages; index ``i`` is the ``i``-th record.

    ``keys`` are the deserialized keys when the spec has a ``key_deserializer``, else the raw
    key bytes (or None).
    """

    __slots__ = ("topic", "partition", "_messages", "_keys")

    def __init__(self, topic: str, partition: int, messages: list, keys: list | None = None):
        self.topic = topic
        self.partition = partition
        self._messages = messages  # confluent_kafka.Message objects (or anything with the same methods)
        self._keys = keys

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, s: slice) -> "Metadata":
        return Metadata(self.topic, self.partition, self._messages[s],
                        None if self._keys is None else self._keys[s])

    def key(self, i: int) -> Any:
        return self._messages[i].key() if self._keys is None else self._keys[i]

    def headers(self, i: int) -> dict[str, bytes]:
        """Headers as a dict: the last value wins for a repeated name (Kafka Connect's
        ``lastWithName``). ``header_list`` has them all."""
        return dict(self._messages[i].headers() or ())

    def header_list(self, i: int) -> list[tuple[str, bytes | None]]:
        """Every header as a ``(name, value)`` pair, in the record's order, a repeated name as
        many times as it was sent (Kafka allows that; Kafka Connect's ``Headers``)."""
        return list(self._messages[i].headers() or ())

    def timestamp(self, i: int) -> int | None:
        """Kafka timestamp in milliseconds since the epoch, or None."""
        kind, ts = self._messages[i].timestamp()
        return ts if kind else None

    def offset(self, i: int) -> int:
        return self._messages[i].offset()

    @property
    def keys(self) -> list:
        return [m.key() for m in self._messages] if self._keys is None else list(self._keys)


class _Drop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"

    def __reduce__(self):
        return "DROP"


DROP = _Drop()
"""Returned by a transform in place of a value to filter that record out."""


class Transform(abc.ABC):
    """Reshapes records, a run of consecutive records of one partition at a time.

    Transforms must be pure (no side effects, same output for the same input): after a bad
    record the runner applies the transform again to the records around it.
    """

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    @abc.abstractmethod
    def apply(self, values: list, meta: Metadata) -> list:
        """Return one item per value, in order: the new value, or ``DROP`` to filter it out.

        Raise ``BadRecordError(index=i)`` for the first record that cannot be transformed;
        the runner applies the error policy to it and transforms the others again.
        """


# --- plugin descriptors: cheap to import, so validation never loads heavy dependencies ---


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class SinkPlugin:
    """What a ``kpipe.sinks`` entry point points at.

    ``factory`` is ``"module:Class"``, imported only when a pipeline actually runs the sink.
    ``config_schema`` is a JSON Schema for the ``sink:`` mapping without its ``type`` key.
    """

    name: str
    config_schema: Mapping[str, Any]
    factory: str | Callable[..., Sink]
    capabilities: Capabilities = field(default_factory=Capabilities)
    description: str = ""
    extra: str = ""
    """The ``kpipe[extra]`` that installs this plugin's dependencies, for the error message."""
    api_version: int = 1
    """The plugin API the plugin was written for (``API_VERSION`` when it was written). kpipe
    refuses, with a message, a plugin newer than itself or older than ``MIN_API_VERSION``."""
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Pipeline settings that suit this sink better than kpipe's own defaults, by section and
    key, e.g. ``{"batch": {"max_age": "5m"}}`` for a sink whose every write is an expensive
    commit. Applied only where the spec does not set the key; ``kpipe check`` names them. A
    value the pipeline schema refuses is reported at the spec's ``sink.type``."""

    def create(self, config: Mapping[str, Any], context: SinkContext) -> Sink:
        return _create(self, config, context)

    def raw_values(self, config: Mapping[str, Any]) -> str:
        """The setting of ``config`` with which the sink parses the values itself (e.g.
        ``"parse: server"``, for messages), or ``""``: it takes them decoded.

        When it names one, the runner checks each value with the deserializer without decoding
        it (a value it would reject is rejected at stage ``deserialize`` as ever) and hands the
        sink the raw bytes in ``Batch.values``. Spec validation refuses it unless the pipeline
        has nothing between the two: the plain ``json`` deserializer, no ``validate``, no
        ``key_deserializer``, no transforms. Override it in a subclass of ``SinkPlugin``."""
        return ""


@dataclass(frozen=True)
class DeserializerPlugin:
    """What a ``kpipe.deserializers`` entry point points at (see ``SinkPlugin``)."""

    name: str
    config_schema: Mapping[str, Any]
    factory: str | Callable[..., Deserializer]
    description: str = ""
    extra: str = ""
    api_version: int = 1

    def create(self, config: Mapping[str, Any]) -> Deserializer:
        return _create(self, config)


@dataclass(frozen=True)
class TransformPlugin:
    """What a ``kpipe.transforms`` entry point points at (see ``SinkPlugin``).

    In a spec, ``- NAME: CONFIG`` uses it; ``CONFIG`` is checked against ``config_schema``.
    """

    name: str
    config_schema: Mapping[str, Any]
    factory: str | Callable[..., Transform]
    description: str = ""
    extra: str = ""
    api_version: int = 1

    def create(self, config: Any) -> Transform:
        return _create(self, config)


def _create(plugin, *args):
    try:
        factory = _load(plugin.factory) if isinstance(plugin.factory, str) else plugin.factory
    except ImportError as exc:
        hint = f'; run: pip install "kpipe[{plugin.extra}]"' if plugin.extra else ""
        raise FatalError(f"plugin {plugin.name!r} needs {exc.name or exc}, which is not installed{hint}") from None
    return factory(*args)
