"""The OffsetBook: the one place a run's positions live, per partition.

- ``consumed``: the next offset expected from the broker (through the stages);
- ``written``: the next offset handed to the sink (a write may still be in flight);
- ``durable``: the next offset the sink holds durably (``Sink.write`` returned for it);
- ``committed``: the next offset the group has acknowledged.

Only a durable position is ever committed: ``to_commit`` hands out durable positions, and
``pending`` remembers partitions whose group offset does not agree with the sink yet.
``resume_positions`` and ``start_position`` decide where a partition starts, for the runner's
seek on assignment and for ``kpipe lag``, so both read positions the same way.
"""
from __future__ import annotations

from typing import Callable, Iterable

__all__ = ["OffsetBook", "resume_positions", "start_position"]


class OffsetBook:
    """Positions of the partitions a run holds. ``consumed`` and ``committed`` may be shared
    with watchers (``RunResult.positions``/``committed``): they read, the runner writes."""

    def __init__(self, consumed: dict | None = None, committed: dict | None = None):
        self.consumed: dict = {} if consumed is None else consumed
        self.written: dict = {}
        self.durable: dict = {}
        self.committed: dict = {} if committed is None else committed  # kept after a revoke: the group's
        self.pending: set = set()  # held partitions whose durable position the group does not have yet

    def __contains__(self, tp) -> bool:
        return tp in self.durable

    def held(self) -> list:
        return list(self.durable)

    def assign(self, tp, start: int) -> None:
        """``tp`` is ours from ``start`` on, which the sink (or the group) holds durably."""
        self.consumed[tp] = self.written[tp] = self.durable[tp] = start
        if self.committed.get(tp) != start:
            self.pending.add(tp)  # make the group's offset agree with the sink's

    def drop(self, tp) -> None:
        """``tp`` is no longer ours; its committed position stays for the summary."""
        for d in (self.consumed, self.written, self.durable):
            d.pop(tp, None)
        self.pending.discard(tp)

    def rewind(self, tp, head: int) -> None:
        """Another writer made ``tp`` durable up to ``head``: resume there."""
        if tp in self.durable:
            self.consumed[tp] = self.written[tp] = self.durable[tp] = head

    def read(self, tp, position: int) -> None:
        if tp in self.consumed:
            self.consumed[tp] = position

    def handed(self, tp, next_offset: int) -> None:
        """A write covering offsets up to ``next_offset`` went to the sink."""
        if tp in self.written and next_offset > self.written[tp]:
            self.written[tp] = next_offset

    def made_durable(self, tp, next_offset: int) -> None:
        if tp in self.durable:
            self.durable[tp] = next_offset

    def to_commit(self, tps: Iterable) -> list[tuple]:
        """``[(topic, partition, durable offset)]`` for the held partitions among ``tps``;
        clears ``pending`` (a failed commit adds its partitions back with ``commit_failed``)."""
        out = [(tp[0], tp[1], self.durable[tp]) for tp in tps if tp in self.durable]
        self.pending.clear()
        return out

    def committed_at(self, tp, offset: int) -> None:
        self.committed[tp] = offset

    def commit_failed(self, tp, offset: int) -> None:
        if tp in self.durable and self.committed.get(tp, -1) < offset:
            self.pending.add(tp)

    def settled(self, tp, target: int) -> bool:
        """``tp`` is durable or committed up to ``target`` and the group agrees with the sink."""
        return (self.committed.get(tp, -1) >= target or self.durable.get(tp, -1) >= target) \
            and tp not in self.pending


def resume_positions(tps: list, load_sink: Callable[[list], dict] | None,
                     read_group: Callable[[list], dict]) -> dict:
    """Where the pipeline resumes on ``tps``: ``{tp: (offset, "sink" | "group")}``.

    The sink's stored offset wins (``load_sink``, for sinks with ``stores_offsets``), then the
    group's committed one (``read_group``, asked only for the rest); partitions with neither
    are left out (``start_position`` decides them)."""
    found: dict = {}
    if tps and load_sink is not None:
        found = {tp: (o, "sink") for tp, o in load_sink(tps).items()}
    missing = [tp for tp in tps if tp not in found]
    if missing:
        found.update((tp, (o, "group")) for tp, o in read_group(missing).items() if o >= 0)
    return found


def start_position(resumed: int | None, low: int, high: int, start: str) -> int:
    """The offset a partition is read from: where it resumes, else ``source.start``'s end."""
    if resumed is not None:
        return resumed
    return low if start == "earliest" else high
