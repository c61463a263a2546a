"""The record stages between consuming and buffering: decode, validate, transform.

Each stage works on a run of consecutive records of one partition, as lists. A record a stage
rejects (``BadRecordError``) is set aside with its stage and error; the others go on. The
caller applies the error policy afterwards, in offset order, so a ``fail`` never follows a
``dlq`` of a later record. ``kpipe run`` and ``kpipe test`` share this code, so a test case
sees exactly what a run would do.
"""
from __future__ import annotations

from dataclasses import dataclass

from kpipe.api import DROP, BadRecordError, FatalError, Metadata
from kpipe.deserializers.basic import JsonDeserializer
from kpipe.deserializers.json_check import check_json
from kpipe.plugins import registry
from kpipe.spec.model import STAGES
from kpipe.validation import Validator

__all__ = ["Stages", "Outcome", "STAGES"]

_BAD = object()  # placeholder for a rejected record inside one stage's output


@dataclass
class Outcome:
    """What became of a run of records.

    ``kept`` are the indices (into the input) of the records to buffer, in order, or None
    when every record was kept; ``values``/``keys`` are theirs. ``rejected`` lists
    ``(index, stage, error)`` in index order; ``dropped`` counts filtered records and skipped
    tombstones.
    """

    kept: list | None
    values: list
    keys: list | None
    rejected: list
    dropped: int = 0


class Stages:
    def __init__(self, spec, reg=None, sink_parses: bool = True):
        """``sink_parses``: hand a sink that parses the values itself (``SinkPlugin.raw_values``)
        their bytes; ``kpipe test`` says False, to show the decoded values."""
        reg = reg or registry()
        self.spec = spec
        self.values = reg.get("deserializer", spec.deserializer_type).create(spec.deserializer_config)
        self.keys = None
        if spec.key_deserializer_type:
            self.keys = reg.get("deserializer", spec.key_deserializer_type).create(spec.key_deserializer_config)
        self.validator = Validator(spec.validate_schema) if spec.validate_schema else None
        self.validate_by_id = spec.validate_registry
        if self.validate_by_id:  # each value against its own schema id's JSON Schema: needs the raw header
            if not hasattr(self.values, "validator"):
                raise FatalError(f"{spec.where(('deserializer', 'validate'))}: validate: registry needs "
                                 f"type json with a registry")
            self.validator = self.values.validator()
        self.transforms = []
        for name, config in spec.transforms:
            plugin = reg.get("transform", name)
            if plugin is None:
                raise FatalError(f"{spec.where(('transforms',))}: unknown transform {name!r}")
            self.transforms.append((name, plugin.create(config)))
        self.delete_tombstones = spec.tombstones == "delete"
        # Nothing to do beyond decoding: the hot path stays one call.
        self.simple = self.keys is None and self.validator is None and not self.transforms
        # The sink parses the values itself (SinkPlugin.raw_values): check them, hand it the bytes.
        sink = reg.get("sink", spec.sink_type) if sink_parses else None
        self.check = None
        if sink is not None and self.simple and sink.raw_values(spec.sink_config):
            if type(self.values) is not JsonDeserializer:  # spec validation refuses it first
                raise FatalError(f"{spec.where(('sink',))}: sink {spec.sink_type!r} parses the values "
                                 f"itself ({sink.raw_values(spec.sink_config)}), which needs the json "
                                 f"deserializer without registry")
            self.check = check_json

    def value_schema(self):
        """The schema sinks may build on: the deserializer's (Avro, a registry's JSON Schema), else
        the validator's JSON Schema.

        The Avro schema comes first: the values are decoded by it, so it is what they are.
        None once transforms may reshape records, since the schema would describe the input."""
        if self.transforms:
            return None
        found = self.values.schema()
        if found is None and self.validator is not None:
            return self.validator.schema
        return found

    def process(self, topic: str, partition: int, msgs: list, raw: list, decoded: list | None = None) -> Outcome:
        """Run ``msgs`` (their raw values in ``raw``) through every stage.

        ``decoded`` replaces the deserializer's output (``kpipe test`` cases that give a value).
        """
        n = len(msgs)
        rejected: list = []
        if self.check is not None and decoded is None:
            return self._checked(raw)
        if self.simple and decoded is None and None not in raw:
            values, bad = _isolated(lambda lo, hi: self.values.deserialize(raw[lo:hi]), n, "deserializer")
            if not bad:
                return Outcome(None, values, None, [])
            rejected += [(i, "deserialize", e) for i, e in bad]
            kept = [i for i in range(n) if values[i] is not _BAD]
            return Outcome(kept, [values[i] for i in kept], None, rejected)

        dropped = 0
        keys = None
        if self.keys is not None:
            raw_keys = [m.key() for m in msgs]
            keys, bad = _isolated(lambda lo, hi: self.keys.deserialize(raw_keys[lo:hi]), n, "key deserializer")
            rejected += [(i, "deserialize", e) for i, e in bad]
        bad_keys = {i for i, _, _ in rejected}

        # Tombstones skip every stage: dropped, or handed to the sink as deletions.
        tombstones = [i for i, v in enumerate(raw) if v is None] if None in raw else []
        if tombstones and not self.delete_tombstones:
            dropped += len(tombstones)
        work = [i for i in range(n) if raw[i] is not None and i not in bad_keys] \
            if tombstones or bad_keys else list(range(n))

        if decoded is not None:
            values = [decoded[i] for i in work]
        else:
            sub = [raw[i] for i in work] if len(work) != n else raw
            values, bad = _isolated(lambda lo, hi: self.values.deserialize(sub[lo:hi]), len(work), "deserializer")
            work, values = _reject(work, values, bad, "deserialize", rejected)

        if self.validator is not None and values:
            found = (self.validator.check(values, [raw[i] for i in work]) if self.validate_by_id
                     else self.validator.check(values))
            bad = [(i, BadRecordError(message, index=i)) for i, message in found]
            work, values = _reject(work, values, bad, "validate", rejected)

        for name, transform in self.transforms:
            if not values:
                break
            meta = Metadata(topic, partition, [msgs[i] for i in work],
                            None if keys is None else [keys[i] for i in work])
            out, bad = _isolated(lambda lo, hi: transform.apply(values[lo:hi], meta[lo:hi]),
                                 len(values), f"transform {name!r}")
            if bad or DROP in out:
                dropped += sum(1 for v in out if v is DROP)
                work, values = _reject(work, out, bad, "transform", rejected, drop=True)
            else:
                values = out

        if tombstones and self.delete_tombstones:
            merged = sorted([(i, v) for i, v in zip(work, values)] +
                            [(i, None) for i in tombstones if i not in bad_keys])
            work, values = [i for i, _ in merged], [v for _, v in merged]
        rejected.sort(key=lambda r: r[0])
        kept = None if len(work) == n else work
        out_keys = None if keys is None else [keys[i] for i in work]
        return Outcome(kept, values, out_keys, rejected, dropped)

    def _checked(self, raw: list) -> Outcome:
        """The raw values the deserializer accepts, undecoded, for a sink that parses them;
        tombstones are dropped or kept (as None) as on the decoding path."""
        rejected = [(i, "deserialize", e) for i, e in self.check(raw)]
        tombstones = None in raw and not self.delete_tombstones
        if not rejected and not tombstones:
            return Outcome(None, raw, None, [])
        gone = {i for i, _, _ in rejected}
        kept = [i for i, v in enumerate(raw) if i not in gone and not (tombstones and v is None)]
        dropped = raw.count(None) if tombstones else 0
        return Outcome(kept, [raw[i] for i in kept], None, rejected, dropped)


def _isolated(fn, n: int, what: str):
    """``fn(lo, hi)`` over ``[0, n)``, around the records it rejects.

    Returns the outputs (``_BAD`` at rejected positions) and ``[(index, error)]``. After a
    rejection the records before it are processed again: stages must be pure.
    """
    out: list = []
    bad: list = []
    lo = 0
    while lo < n:
        try:
            part = fn(lo, n)
        except BadRecordError as exc:
            i = lo + (exc.index or 0)
            if not lo <= i < n:
                raise FatalError(f"{what} reported a bad record at index {exc.index} of {n - lo}") from exc
            if i > lo:
                try:
                    head = fn(lo, i)
                except BadRecordError as again:
                    raise FatalError(f"{what} is not deterministic: it rejected a record it had "
                                     f"accepted ({again})") from again
                _check_len(head, i - lo, what)
                out += head
            out.append(_BAD)
            bad.append((i, exc))
            lo = i + 1
            continue
        _check_len(part, n - lo, what)
        out += part
        break
    return out, bad


def _check_len(out, expected: int, what: str) -> None:
    if len(out) != expected:
        raise FatalError(f"{what} returned {len(out)} items for {expected} records; it must return "
                         "one per record (DROP to filter one out)")


def _reject(work: list, values: list, bad: list, stage: str, rejected: list, drop: bool = False):
    """Remove the rejected (and, for transforms, dropped) records from ``work``/``values``."""
    if not bad and not drop:
        return work, values
    rejected += [(work[i], stage, e) for i, e in bad]
    gone = {i for i, _ in bad}
    keep = [j for j, v in enumerate(values) if j not in gone and v is not DROP]
    return [work[j] for j in keep], [values[j] for j in keep]
