"""A pytest conformance suite for sink plugins: subclass ``SinkConformance``, get every check.

    from kpipe.testing import SinkConformance

    class TestMySink(SinkConformance):
        plugin = my_plugin                    # the SinkPlugin, or its entry-point name ("files")

        def config(self, tmp_path):           # the sink's config for a fresh, empty destination
            return {"path": str(tmp_path / "out")}

        def read_back(self, config):          # every value that landed there, in any order
            return [json.loads(line) for f in ... for line in f]

Each ``test_*`` method is one check, inherited by the subclass and run by pytest. The kit writes
values of its own making (``value()``): each carries an ``id`` naming its Kafka coordinates,
and ``identity()`` reads it back from what ``read_back`` returns, so the checks can count copies
of every record. Override either when the sink reshapes values.

Optional hooks:

- ``destination_down(config)``: a context manager during which the destination fails
  transiently (connection refused, 503); the retryable-error check is skipped without it;
- ``deletes_config(tmp_path)``: a config in which a tombstone whose Kafka key is a record's
  ``id`` deletes that record; the deletes checks (``Capabilities.deletes``) are skipped without
  it, and the checks of batches without records and of a bad record also run in it;
- ``bad_value(topic, partition, offset)``: a value the sink refuses with ``BadRecordError``
  (a type or NOT NULL violation, a value the format cannot encode, a 400 from a receiver); the
  bad-record check is skipped without it;
- ``context(config)``: the ``SinkContext`` (default: a consumer group unique to the test,
  ``self.group``).

The checks drive the sink the way the runner does: all calls on one thread, ``open`` first,
``load_offsets`` on assignment (``stores_offsets`` sinks), whole batches of one partition each,
and a "crash" is an instance dropped without ``close``. Batches that carry no record are shaped
as the runner makes them: an all-filtered range, skipped tombstones (the runner drops them
before the sink), a range whose every record the error policy let go (``Batch.without``); after
a ``BadRecordError`` the kit writes the same call again with that record dropped, as the
runner's ``skip`` and ``dlq`` policies do. docs/plugins-testing.md lists every check and what
it proves. Needs pytest (``kpipe[test]``).
"""
from __future__ import annotations

import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Any, Hashable, Iterable, Iterator, Mapping

import pytest

from kpipe.api import (Batch, BadRecordError, FatalError, KpipeError, OffsetConflict, RetryableError, Sink,
                       SinkContext, SinkPlugin)
from kpipe.transforms.testing import FakeMessage

__all__ = ["SinkConformance"]

TOPIC = "kpipe_conformance"


class SinkConformance:
    """Inherit from this in a ``Test*`` class; supply ``plugin``, ``config`` and ``read_back``."""

    plugin: SinkPlugin | str
    """The sink's descriptor, or the name of its ``kpipe.sinks`` entry point."""
    topic: str = TOPIC

    # -- what the subclass supplies ---------------------------------------------------------

    def config(self, tmp_path) -> Mapping[str, Any]:
        """The sink's config mapping (without ``type``) for a fresh, empty destination."""
        raise NotImplementedError("SinkConformance subclasses define config(self, tmp_path)")

    def read_back(self, config: Mapping[str, Any]) -> Iterable[Any]:
        """Every value durable at the destination of ``config``, one item per stored copy."""
        raise NotImplementedError("SinkConformance subclasses define read_back(self, config)")

    @contextmanager
    def destination_down(self, config: Mapping[str, Any]) -> Iterator[None]:
        """While inside, the destination fails transiently; afterwards it works again.

        Optional: without it, the retryable-error check is skipped."""
        pytest.skip(f"{type(self).__name__} defines no destination_down(config) hook")
        yield

    def deletes_config(self, tmp_path) -> Mapping[str, Any] | None:
        """A config where a tombstone keyed by a record's ``id`` deletes it; None: not checked."""
        return None

    def bad_value(self, topic: str, partition: int, offset: int) -> Any:
        """A value for the record at these coordinates that the sink refuses with
        ``BadRecordError`` (one that breaks a column's type or NOT NULL, that the format cannot
        encode, that the receiver answers 400 for); None: the bad-record check is skipped."""
        return None

    # -- what the subclass may override -----------------------------------------------------

    def value(self, topic: str, partition: int, offset: int) -> Any:
        """The value the kit writes for a record at these coordinates."""
        return {"id": f"{topic}/{partition}/{offset}", "n": offset, "text": f"record {offset}"}

    def identity(self, landed: Any) -> Hashable:
        """What names a landed value's record; the kit compares it with ``value()``'s."""
        return landed["id"]

    def tombstone_key(self, topic: str, partition: int, offset: int) -> Any:
        """The Kafka key of a tombstone deleting the record written at these coordinates."""
        return self.identity(self.value(topic, partition, offset)).encode()

    @property
    def group(self) -> str:
        """A consumer group unique to the test (pytest makes one instance per test)."""
        if "_group" not in self.__dict__:
            self.__dict__["_group"] = f"kpipe-conformance-{uuid.uuid4().hex[:12]}"
        return self.__dict__["_group"]

    def context(self, config: Mapping[str, Any], tombstones: str = "skip") -> SinkContext:
        return SinkContext(pipeline="kpipe-conformance", group=self.group, tombstones=tombstones)

    # -- helpers for the checks (and for a subclass's own tests) ----------------------------

    def descriptor(self) -> SinkPlugin:
        plugin = getattr(self, "plugin", None)
        if plugin is None:
            raise TypeError(f"{type(self).__name__} sets no plugin")
        if isinstance(plugin, str):
            from kpipe.plugins import registry
            found = registry().get("sink", plugin)
            if found is None:
                raise LookupError(f"no sink plugin named {plugin!r} is installed")
            return found
        return plugin

    def new_sink(self, config: Mapping[str, Any], *, open: bool = True, tombstones: str = "skip") -> Sink:
        """A fresh instance, as a (re)started runner would make it; opened unless told not to."""
        sink = self.descriptor().create(config, self.context(config, tombstones))
        if open:
            sink.open()
        return sink

    def batch(self, start: int, stop: int, partition: int = 0, *, skip: Iterable[int] = (),
              tombstones: Mapping[int, int] | None = None) -> Batch:
        """The records at offsets ``[start, stop)`` of ``partition``, but those in ``skip``
        (filtered: the range still covers them). ``tombstones`` maps an offset to the offset
        of the record it deletes: value None, key ``tombstone_key`` of that record."""
        skip, tombstones = set(skip), dict(tombstones or {})
        msgs, values = [], []
        for o in range(start, stop):
            if o in skip:
                continue
            if o in tombstones:
                value, key = None, self.tombstone_key(self.topic, partition, tombstones[o])
            else:
                value, key = self.value(self.topic, partition, o), f"k{o}".encode()
            msgs.append(FakeMessage(value, key, [("source", b"conformance")], 1_795_000_000_000 + o, o,
                                    self.topic, partition))
            values.append(value)
        return Batch(self.topic, partition, start, stop, values, msgs)

    def ids(self, batches: Iterable[Batch]) -> Counter:
        """One count for every record the batches carry."""
        return Counter(self.identity(v) for b in batches for v in b.values if v is not None)

    def landed(self, config: Mapping[str, Any]) -> Counter:
        """Copies of each record at the destination."""
        return Counter(self.identity(v) for v in self.read_back(config))

    def assert_landed(self, config, expected: Counter, why: str) -> None:
        got = self.landed(config)
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        dups = sorted(k for k, n in got.items() if n > 1)
        assert not (missing or extra or dups), (
            f"{why}: {len(missing)} records missing (e.g. {missing[:3]}), {len(dups)} duplicated "
            f"(e.g. {dups[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})")

    def tp(self, partition: int = 0) -> tuple:
        return (self.topic, partition)

    def capabilities(self):
        return self.descriptor().capabilities

    def write_or_fenced(self, sink: Sink, batch: Batch, head: int) -> None:
        """Write a batch that is already durable: the sink may accept it (idempotent) or refuse
        it with ``OffsetConflict`` naming its partition at the durable ``head``; nothing else."""
        try:
            sink.write([batch])
        except OffsetConflict as exc:
            assert exc.partitions == {(batch.topic, batch.partition): head}, (
                f"a replay of {batch} was fenced, but OffsetConflict named {exc.partitions}, "
                f"not the durable head {head}")

    # -- the checks -------------------------------------------------------------------------

    def test_open_and_close_are_idempotent(self, tmp_path):
        """close without open; open twice; close twice; close after a failed open."""
        config = self.config(tmp_path)
        self.new_sink(config, open=False).close()  # never opened
        never = self.new_sink(config, open=False)
        never.close()
        never.close()
        sink = self.new_sink(config, open=False)
        sink.open()
        sink.open()
        a = self.batch(0, 3)
        sink.write([a])
        sink.close()
        sink.close()
        self.assert_landed(config, self.ids([a]), "a write between a double open and a double close")
        try:
            outage = self.destination_down(config)
            outage.__enter__()
        except pytest.skip.Exception:
            return  # no outage hook: a failed open cannot be provoked generically
        try:
            failed = self.new_sink(config, open=False)
            with pytest.raises(KpipeError):
                failed.open()
        finally:
            outage.__exit__(None, None, None)
        failed.close()
        failed.close()

    def test_an_empty_batch_is_harmless(self, tmp_path):
        """No batches, a batch without values and a batch whose range only covers filtered
        offsets land nothing and never move a stored offset anywhere but to their end; the next
        batches are accepted and the stored offset follows their range, filtered offsets included."""
        config = self.config(tmp_path)
        sink = self.new_sink(config)
        stores = self.capabilities().stores_offsets
        sink.write([])
        empty = self.batch(0, 5, skip=range(0, 5))
        assert len(empty) == 0
        sink.write([empty])
        assert not list(self.read_back(config)), "a batch without records landed something"
        if stores:
            got = sink.load_offsets([self.tp(0)])
            assert got in ({}, {self.tp(0): 5}), (
                f"after an empty batch covering 0..4, load_offsets returned {got}: expected nothing or 5")
        a = self.batch(5, 10)
        sink.write([a])  # must not be taken for a stale writer
        b = self.batch(10, 20, skip=[10, 11, 13, 14, 16, 17, 18, 19])  # records at 12 and 15 only
        sink.write([b])
        self.assert_landed(config, self.ids([a, b]), "batches after an empty one")
        if stores:
            got = sink.load_offsets([self.tp(0)])
            assert got == {self.tp(0): 20}, (
                f"load_offsets returned {got} after a batch covering up to 19 (last record 15): "
                f"expected its next_offset 20")
        sink.close()

    def test_the_same_batch_twice_leaves_one_copy(self, tmp_path):
        """Write a batch, then the same batch again, by the same and by a new instance."""
        caps = self.capabilities()
        if not caps.exactly_once:
            pytest.skip("the sink declares neither idempotent_writes nor stores_offsets: "
                        "a replay may duplicate (at least once)")
        config = self.config(tmp_path)
        sink = self.new_sink(config)
        a = self.batch(0, 4)
        sink.write([a])
        self.write_or_fenced(sink, a, 4)
        self.assert_landed(config, self.ids([a]), "the same batch written twice by one instance")
        again = self.new_sink(config)
        if caps.stores_offsets:
            again.load_offsets([self.tp(0)])
        self.write_or_fenced(again, a, 4)
        self.assert_landed(config, self.ids([a]), "the same batch written again by a new instance")
        sink.close()
        again.close()

    def test_a_crash_between_write_and_commit_loses_and_duplicates_nothing(self, tmp_path):
        """Instance 1 writes A and dies before the commit (no close). Instance 2 starts where
        the sink says (stores_offsets), or where Kafka's commit says: before A, so it writes A
        again, then B. Every record lands once."""
        caps = self.capabilities()
        config = self.config(tmp_path)
        a, b = self.batch(0, 5), self.batch(5, 9)
        first = self.new_sink(config)
        if caps.stores_offsets:
            assert first.load_offsets([self.tp(0)]) == {}, "a fresh destination already stores an offset"
        first.write([a])
        del first  # the crash: never closed, never committed
        second = self.new_sink(config)
        if caps.stores_offsets:
            got = second.load_offsets([self.tp(0)])
            assert got == {self.tp(0): a.next_offset}, (
                f"after the crash, load_offsets returned {got}: expected A's next offset {a.next_offset}")
        self.write_or_fenced(second, a, a.next_offset)  # what a runner without the sink's offset does
        second.write([b])
        if not caps.exactly_once:
            got = self.landed(config)
            missing = self.ids([a, b]) - got
            assert not missing, f"records lost after a crash: {sorted(missing)[:3]}"
            pytest.skip("no loss; duplicates are allowed: the sink declares neither idempotent_writes "
                        "nor stores_offsets (at least once)")
        self.assert_landed(config, self.ids([a, b]), "a crash between the write of A and its commit")
        second.close()

    def test_a_retryable_error_commits_nothing(self, tmp_path):
        """While the destination is down, a write raises RetryableError (not BadRecordError or
        FatalError) and nothing of it becomes durable; once it is back, the same instance
        writes the same batch exactly once."""
        config = self.config(tmp_path)
        sink = self.new_sink(config)
        stores = self.capabilities().stores_offsets
        a, b = self.batch(0, 3), self.batch(3, 7)
        sink.write([a])
        with self.destination_down(config):
            with pytest.raises(KpipeError) as info:
                sink.write([b])
        assert isinstance(info.value, RetryableError) and not isinstance(info.value, (BadRecordError, FatalError)), (
            f"a transient outage raised {type(info.value).__name__}: {info.value}; expected RetryableError")
        self.assert_landed(config, self.ids([a]), "a write that raised RetryableError")
        if stores:
            fresh = self.new_sink(config)
            got = fresh.load_offsets([self.tp(0)])
            fresh.close()
            assert got == {self.tp(0): a.next_offset}, (
                f"after a failed write of 3..6, the stored offset is {got}, not {a.next_offset}")
        sink.write([b])  # the runner's retry: same instance, same batch
        self.assert_landed(config, self.ids([a, b]), "the retry after the outage")
        if stores:
            assert sink.load_offsets([self.tp(0)]) == {self.tp(0): b.next_offset}
        sink.close()

    def test_a_revoke_drops_the_partitions_state(self, tmp_path):
        """Instance 1 writes A to a partition, loses it (revoke), a second instance writes B,
        then the partition comes back to instance 1: load_offsets tells B's end, not what
        instance 1 remembered, and instance 1 writes C after B correctly."""
        stores = self.capabilities().stores_offsets
        config = self.config(tmp_path)
        a, b, c = self.batch(0, 3), self.batch(3, 6), self.batch(6, 9)
        other = self.batch(0, 2, partition=1)
        first = self.new_sink(config)
        if stores:
            first.load_offsets([self.tp(0), self.tp(1)])
        first.write([a, other])
        first.revoke([self.tp(0)])
        second = self.new_sink(config)
        if stores:
            assert second.load_offsets([self.tp(0)]) == {self.tp(0): 3}
        second.write([b])
        second.close()
        if stores:  # reassigned: the runner asks again and seeks there
            got = first.load_offsets([self.tp(0)])
            assert got == {self.tp(0): 6}, f"after a revoke and a new assignment, load_offsets returned {got}, not 6"
        first.write([c])
        tail = self.batch(2, 4, partition=1)  # the partition it kept still works too
        first.write([tail])
        self.assert_landed(config, self.ids([a, b, c, other, tail]), "writes after a revoke and reassignment")
        first.close()

    def test_stores_offsets_keeps_each_partitions_next_offset(self, tmp_path):
        """stores_offsets: load_offsets returns, per partition asked, the next offset after the
        last write (from the writer and from a new instance), and nothing for others."""
        if not self.capabilities().stores_offsets:
            pytest.skip("the sink does not declare stores_offsets")
        config = self.config(tmp_path)
        sink = self.new_sink(config)
        p0, p1, p2 = self.tp(0), self.tp(1), self.tp(2)
        assert sink.load_offsets([p0, p1, p2]) == {}, "a fresh destination already stores offsets"
        sink.write([self.batch(0, 4)])
        assert sink.load_offsets([p0, p1, p2]) == {p0: 4}
        sink.write([self.batch(4, 7), self.batch(7, 10), self.batch(0, 3, partition=1)])
        assert sink.load_offsets([p0, p1, p2]) == {p0: 10, p1: 3}
        assert sink.load_offsets([p1]) == {p1: 3}, "load_offsets returned partitions it was not asked about"
        fresh = self.new_sink(config)
        assert fresh.load_offsets([p0, p1, p2]) == {p0: 10, p1: 3}, "stored offsets are not durable"
        fresh.close()
        sink.close()

    def test_stores_offsets_fences_a_stale_writer(self, tmp_path):
        """stores_offsets: two instances load the same offsets; the second writes ahead; the
        first's write of that partition raises OffsetConflict naming the second's head and
        writes nothing of it, while its batch of another partition in the same call lands."""
        if not self.capabilities().stores_offsets:
            pytest.skip("the sink does not declare stores_offsets")
        config = self.config(tmp_path)
        stale, owner = self.new_sink(config), self.new_sink(config)
        assert stale.load_offsets([self.tp(0), self.tp(1)]) == {}
        assert owner.load_offsets([self.tp(0)]) == {}
        a, b = self.batch(0, 4), self.batch(4, 8)
        owner.write([a])
        owner.write([b])
        late = self.batch(0, 6)  # the stale writer's view of offsets 0..5
        elsewhere = self.batch(0, 3, partition=1)
        with pytest.raises(OffsetConflict) as info:
            stale.write([late, elsewhere])
        assert info.value.partitions == {self.tp(0): 8}, (
            f"OffsetConflict named {info.value.partitions}, expected {{{self.tp(0)}: 8}}")
        self.assert_landed(config, self.ids([a, b, elsewhere]), "a stale writer fenced")
        assert owner.load_offsets([self.tp(0), self.tp(1)]) == {self.tp(0): 8, self.tp(1): 3}
        stale.close()
        owner.close()

    def test_alter_offsets_moves_where_a_fresh_sink_resumes(self, tmp_path):
        """alter_offsets (``kpipe offsets reset``): a stale ``expected`` raises OffsetConflict and
        moves nothing; then a replay back (to a batch boundary) and a skip forward are exactly
        where a fresh instance resumes, and writes from there land and move on."""
        caps = self.capabilities()
        if not (caps.alter_offsets and caps.stores_offsets):
            pytest.skip("the sink does not declare alter_offsets with stores_offsets")
        config = self.config(tmp_path)
        t0, t1 = self.tp(0), self.tp(1)
        first = self.new_sink(config)
        first.load_offsets([t0, t1])
        a, b, c = self.batch(0, 4), self.batch(4, 8), self.batch(0, 3, partition=1)
        for x in (a, b, c):
            first.write([x])
        first.close()
        operator = self.new_sink(config)
        with pytest.raises(OffsetConflict):
            operator.alter_offsets(self.group, {t0: 2, t1: 10}, {t0: 4, t1: 3})
        assert self.new_sink(config).load_offsets([t0, t1]) == {t0: 8, t1: 3}, "a stale alter_offsets moved something"
        operator.alter_offsets(self.group, {t0: 4, t1: 10}, {t0: 8, t1: 3})
        operator.close()
        run = self.new_sink(config)
        got = run.load_offsets([t0, t1])
        assert got == {t0: 4, t1: 10}, f"after alter_offsets a fresh instance resumes at {got}, not {{{t0}: 4, {t1}: 10}}"
        replay, after = self.batch(4, 8), self.batch(10, 12, partition=1)
        run.write([replay])
        run.write([after])
        assert run.load_offsets([t0, t1]) == {t0: 8, t1: 12}
        landed = self.landed(config)
        assert set(self.ids([a, b, c, after])) <= set(landed), "a record went missing across alter_offsets"
        run.close()

    def test_idempotent_writes_replay_leaves_one_copy(self, tmp_path):
        """idempotent_writes: replaying earlier batches after later ones, from a new instance,
        in one call, leaves one copy of everything."""
        if not self.capabilities().idempotent_writes:
            pytest.skip("the sink does not declare idempotent_writes")
        config = self.config(tmp_path)
        sink = self.new_sink(config)
        a, b, c = self.batch(0, 3), self.batch(3, 6), self.batch(6, 9)
        sink.write([a])
        sink.write([b])
        again = self.new_sink(config)
        try:
            again.write([a, b])
        except OffsetConflict as exc:
            assert exc.partitions == {self.tp(0): 6}, f"a fenced replay named {exc.partitions}, not the head 6"
        again.write([c]) if self.capabilities().stores_offsets else again.write([b, c])
        self.assert_landed(config, self.ids([a, b, c]), "a replay of batches already durable")
        sink.close()
        again.close()

    def _deletes_config_or_skip(self, tmp_path) -> Mapping[str, Any]:
        if not self.capabilities().deletes:
            pytest.skip("the sink does not declare deletes")
        config = self.deletes_config(tmp_path)
        if config is None:
            pytest.skip(f"{type(self).__name__} defines no deletes_config(tmp_path)")
        return config

    def test_deletes_a_tombstone_removes_its_key(self, tmp_path):
        """deletes: with tombstones: delete, a record whose value is None removes the record
        its key names; the records around it stay."""
        config = self._deletes_config_or_skip(tmp_path)
        sink = self.new_sink(config, tombstones="delete")
        a = self.batch(0, 4)
        sink.write([a])
        t = self.batch(4, 6, tombstones={4: 1})  # offset 4 deletes the record of offset 1
        sink.write([t])
        want = self.ids([a, t])
        del want[self.identity(self.value(self.topic, 0, 1))]
        self.assert_landed(config, want, "a tombstone for the record at offset 1")
        sink.close()

    # -- writes without records, bad records, a second run ------------------------------------

    def _configs(self, tmp_path, deletes: bool = True) -> list:
        """``(config, tombstones)``: the plain config, and for a ``deletes`` sink with a
        ``deletes_config`` (unless ``deletes`` is False) that config with ``tombstones: delete``,
        whose writes take other paths (upserts, deletes) through the sink."""
        out = [(self.config(tmp_path), "skip")]
        if deletes and self.capabilities().deletes:
            config = self.deletes_config(tmp_path)
            if config is not None:
                out.append((config, "delete"))
        return out

    def _assert_offsets(self, config, sink: Sink, want: dict, why: str, tombstones: str = "skip") -> None:
        """``load_offsets`` returns ``want``, from ``sink`` and from a new instance (durable)."""
        asked = sorted(want)
        got = sink.load_offsets(asked)
        assert got == want, f"{why}: load_offsets returned {got}, expected {want}"
        fresh = self.new_sink(config, tombstones=tombstones)
        try:
            got = fresh.load_offsets(asked)
        finally:
            fresh.close()
        assert got == want, f"{why}: a new instance's load_offsets returned {got}, expected {want}"

    def _check_a_batch_without_records(self, tmp_path, make, why: str, *, together: bool = False,
                                       deletes: bool = True) -> None:
        """Records 0..3, ``write([])``, then ``make(4, 8, partition)``: a batch covering 4..7
        that carries no record, then records 8..9 (``together``: in the same call). Every
        record stays, the stored offset moves to 8, then 10. The deletes config writes partition
        1: a consumer group's stored offsets may be shared by every destination of the sink."""
        stores = self.capabilities().stores_offsets
        for partition, (config, tombstones) in enumerate(self._configs(tmp_path, deletes)):
            tp = self.tp(partition)
            sink = self.new_sink(config, tombstones=tombstones)
            if stores:
                sink.load_offsets([tp])
            a, b = self.batch(0, 4, partition), self.batch(8, 10, partition)
            sink.write([a])
            sink.write([])
            self.assert_landed(config, self.ids([a]), f"write([]) after records 0..3 (tombstones: {tombstones})")
            if stores:
                got = sink.load_offsets([tp])
                assert got == {tp: 4}, f"write([]) after records 0..3 moved the stored offset: {got}"
            empty = make(4, 8, partition)
            assert len(empty) == 0 and (empty.start_offset, empty.next_offset) == (4, 8)
            why_here = f"{why} covering 4..7 after records 0..3 (tombstones: {tombstones})"
            try:
                if together:
                    sink.write([empty, b])
                else:
                    sink.write([empty])
                    self.assert_landed(config, self.ids([a]), why_here)
                    if stores:
                        self._assert_offsets(config, sink, {tp: 8}, why_here, tombstones)
                    sink.write([b])  # starts where the empty batch ended: not a stale writer
            except OffsetConflict as exc:
                raise AssertionError(f"{why_here}: records 8..9 were fenced ({exc}): the batch without "
                                     "records did not move the stored offset") from None
            self.assert_landed(config, self.ids([a, b]), f"{why_here}, then records 8..9")
            if stores:
                self._assert_offsets(config, sink, {tp: 10}, f"{why_here}, then records 8..9", tombstones)
            sink.close()

    @staticmethod
    def _all_let_go(batch: Batch) -> Batch:
        """``batch`` once the runner has let go of every record in it, one ``without`` at a time."""
        while len(batch):
            batch = batch.without(0)
        return batch

    def _all_filtered(self, start: int, stop: int, partition: int) -> Batch:
        return self.batch(start, stop, partition, skip=range(start, stop))

    def test_an_empty_write_after_data_keeps_it(self, tmp_path):
        """After records 0..3, ``write([])`` and then a batch covering 4..7 without records, in a
        call of its own, keep every record; the stored offset moves to 8 (never a wipe, never a
        stale offset that makes the next batch look like a stale writer's)."""
        self._check_a_batch_without_records(tmp_path, self._all_filtered, "a batch without records")

    def test_an_all_filtered_batch_before_data_in_one_call_is_harmless(self, tmp_path):
        """After records 0..3, one call with a batch whose offsets 4..7 were all filtered out and
        then records 8..9: everything lands once and the stored offset is 10."""
        self._check_a_batch_without_records(tmp_path, self._all_filtered, "an all-filtered batch", together=True)

    def test_an_all_skipped_tombstones_batch_moves_the_offset(self, tmp_path):
        """``tombstones: skip``: the runner drops tombstones before the sink, so a batch of
        tombstones only reaches it as a range without records; it deletes nothing and moves the
        stored offset."""
        self._check_a_batch_without_records(
            tmp_path, lambda start, stop, partition: self._all_let_go(
                self.batch(start, stop, partition, tombstones={o: o - start for o in range(start, stop)})),
            "a batch of skipped tombstones", deletes=False)

    def test_an_all_dead_lettered_batch_moves_the_offset(self, tmp_path):
        """A batch whose every record the error policy let go (``Batch.without`` for each, as
        the runner does after ``BadRecordError``) keeps the records before it and moves the
        stored offset."""
        self._check_a_batch_without_records(
            tmp_path, lambda start, stop, partition: self._all_let_go(self.batch(start, stop, partition)),
            "an all-dead-lettered batch")

    def test_deletes_an_all_tombstone_batch_deletes_exactly_its_keys(self, tmp_path):
        """deletes: records 0..5, then a batch of tombstones only (records 1 and 4, and 1 again):
        exactly those two records go, the others stay, the stored offset moves to 9."""
        config = self._deletes_config_or_skip(tmp_path)
        sink = self.new_sink(config, tombstones="delete")
        if self.capabilities().stores_offsets:
            sink.load_offsets([self.tp(0)])
        a = self.batch(0, 6)
        sink.write([a])
        t = self.batch(6, 9, tombstones={6: 1, 7: 4, 8: 1})
        assert t.values == [None, None, None]
        sink.write([t])
        want = self.ids([a])
        for gone in (1, 4):
            del want[self.identity(self.value(self.topic, 0, gone))]
        self.assert_landed(config, want, "a batch of tombstones for records 1 and 4")
        if self.capabilities().stores_offsets:
            self._assert_offsets(config, sink, {self.tp(0): 9}, "a batch of tombstones covering 6..8", "delete")
        sink.close()

    def test_a_bad_record_is_reported_at_its_index_and_the_rest_lands(self, tmp_path):
        """One call: a batch 4..5, then a batch 6..11 whose record 9 is ``bad_value`` (with
        ``deletes_config``: after tombstones at 7 and 8, deleting records 1 and 2). The sink
        raises ``BadRecordError`` whose index points at record 9 in the second batch (not in a
        part of it), with its topic, partition and offset; the runner then writes the same call
        with that record dropped (``Batch.without``), and every other record is applied once."""
        bad = self.bad_value(self.topic, 0, 9)
        if bad is None:
            pytest.skip(f"{type(self).__name__} defines no bad_value(topic, partition, offset)")
        caps = self.capabilities()
        config, tombstones = self._configs(tmp_path)[-1]
        sink = self.new_sink(config, tombstones=tombstones)
        if caps.stores_offsets:
            sink.load_offsets([self.tp(0)])
        a, p = self.batch(0, 4), self.batch(4, 6)
        m = self.batch(6, 12, tombstones={7: 1, 8: 2} if tombstones == "delete" else None)
        index = m.offsets.index(9)
        m.values[index] = bad
        sink.write([a])
        with pytest.raises(KpipeError) as info:
            sink.write([p, m])
        exc = info.value
        assert isinstance(exc, BadRecordError), f"a bad record raised {type(exc).__name__}: {exc}"
        where = (exc.topic, exc.partition, exc.index, exc.offset)
        assert where == (self.topic, 0, index, 9), (
            f"the bad record at offset 9, index {index} of {m}, was reported as (topic, partition, "
            f"index, offset) {where}: the runner would drop another record or not find it")
        try:  # the runner's skip or dlq policy, then the same call again
            sink.write([p, m.without(index)])
        except OffsetConflict as conflict:
            raise AssertionError(
                f"the call written again without the bad record was fenced ({conflict}): the failed "
                "call made part of itself durable and the sink did not take that into account") from None
        want = self.ids([a, p, m.without(index)])
        if tombstones == "delete":
            for gone in (1, 2):
                del want[self.identity(self.value(self.topic, 0, gone))]
        why = "the call written again without the bad record"
        if caps.exactly_once:
            self.assert_landed(config, want, why)
        else:
            got = self.landed(config)
            assert not (set(want) ^ set(got)), (
                f"{why}: missing {sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}")
        if caps.stores_offsets:
            self._assert_offsets(config, sink, {self.tp(0): 12}, why, tombstones)
        sink.close()

    def test_a_second_run_after_a_crash_lands_each_record_once(self, tmp_path):
        """Run 1 writes records 0..3 of partition 0, a batch 4..7 all filtered, then in one call
        8..11 (9 filtered) and partition 1's 0..2, and dies (no close; Kafka has committed only
        up to 8, nothing of partition 1). Run 2 loads offsets and writes the same batches again
        from where it resumes, as the runner does, then new batches of both partitions: one copy
        of each record, and the stored offsets are each partition's end."""
        caps = self.capabilities()
        config = self.config(tmp_path)
        p0, p1 = self.tp(0), self.tp(1)
        calls = [[self.batch(0, 4)], [self.batch(4, 8, skip=range(4, 8))],
                 [self.batch(8, 12, skip=[9]), self.batch(0, 3, partition=1)]]
        first = self.new_sink(config)
        if caps.stores_offsets:
            first.load_offsets([p0, p1])
        for call in calls:
            first.write(call)
        del first  # the crash
        second = self.new_sink(config)
        resume = {p0: 8, p1: 0}  # the Kafka commit
        if caps.stores_offsets:
            got = second.load_offsets([p0, p1])
            assert got == {p0: 12, p1: 3}, f"after the crash, load_offsets returned {got}, expected {{p0: 12, p1: 3}}"
            resume.update(got)
        heads = {p0: 12, p1: 3}
        for b in (b for call in calls for b in call if b.start_offset >= resume[(b.topic, b.partition)]):
            self.write_or_fenced(second, b, heads[(b.topic, b.partition)])
        new = [self.batch(12, 15), self.batch(3, 5, partition=1)]
        second.write(new)
        everything = [b for call in calls for b in call] + new
        if not caps.exactly_once:
            missing = self.ids(everything) - self.landed(config)
            assert not missing, f"records lost in a second run after a crash: {sorted(missing)[:3]}"
            pytest.skip("no loss; duplicates are allowed: the sink declares neither idempotent_writes "
                        "nor stores_offsets (at least once)")
        self.assert_landed(config, self.ids(everything), "a second run after a crash")
        if caps.stores_offsets:
            self._assert_offsets(config, second, {p0: 15, p1: 5}, "a second run after a crash")
        second.close()
