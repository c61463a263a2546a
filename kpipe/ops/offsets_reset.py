"""``kpipe offsets reset``: the plan (current -> new, per partition) and applying it.

Follows ``kafka-consumer-groups --reset-offsets``: a dry run unless executed; targets outside
the log are clamped to its start or end (and reported); a group with active members is refused.
Where the position really lives decides the order when executed: the sink's store first
(``Sink.alter_offsets``, fenced on the positions the plan was made from), then the group, so a
failure between the two leaves the sink, which wins on the next start, at the new position.
"""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from kpipe.api import FatalError

__all__ = ["Move", "Plan", "parse_scope", "parse_datetime", "read_csv", "targets", "make_plan",
           "refusal", "replay_warnings", "commit_group"]


@dataclass
class Move:
    topic: str
    partition: int
    current: int            # where the next run would start now
    stored: int | None      # the sink's stored position the plan was made from (the fence)
    new: int
    clamped: str = ""       # "log start" / "log end" when the asked offset was outside the log
    asked: int | None = None

    @property
    def tp(self) -> tuple:
        return (self.topic, self.partition)


@dataclass
class Plan:
    moves: list
    warnings: list = field(default_factory=list)


def parse_scope(values: list[str] | None) -> dict | None:
    """``--topic T`` / ``--topic T:0,2``: ``{topic: set of partitions or None (all)}``."""
    if not values:
        return None
    scope: dict = {}
    for v in values:
        topic, _, parts = v.partition(":")
        if not topic:
            raise ValueError(f"--topic {v!r}: no topic")
        try:
            wanted = {int(p) for p in parts.split(",")} if parts else None
        except ValueError:
            raise ValueError(f"--topic {v!r}: partitions are numbers, as in T:0,2") from None
        if topic not in scope:
            scope[topic] = wanted
        elif scope[topic] is None or wanted is None:
            scope[topic] = None  # the whole topic was asked for as well
        else:
            scope[topic] |= wanted
    return scope


def parse_datetime(text: str) -> int:
    """ISO 8601 (``2026-11-26T10:00:00Z``, an offset, or no zone meaning UTC) to epoch ms."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--to-datetime {text!r}: not an ISO 8601 time such as 2026-11-26T10:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def read_csv(path: str) -> dict:
    """``topic,partition,offset`` lines (``kpipe offsets export``; a header line is skipped)."""
    out: dict = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (n == 1 and row[:3] == ["topic", "partition", "offset"]):
                continue
            try:
                topic, partition, offset = row
                out[(topic, int(partition))] = int(offset)
            except ValueError:
                raise ValueError(f"{path}:{n}: expected topic,partition,offset, got {','.join(row)!r}") from None
    return out


def targets(args, positions, consumer) -> dict:
    """The offset asked for each partition in scope, before clamping."""
    scope = parse_scope(args.topic)
    rows = [p for p in positions if scope is None or (p.topic in scope and (scope[p.topic] is None
                                                                            or p.partition in scope[p.topic]))]
    known = {p.tp for p in positions}
    for topic, parts in (scope or {}).items():
        if not any(t == topic for t, _ in known):
            raise ValueError(f"--topic {topic}: not one of the spec's topics")
        for q in sorted(set(parts or ()) - {q for t, q in known if t == topic}):
            raise ValueError(f"--topic {topic}:{q}: the topic has no partition {q}")
    if args.from_file:
        wanted = read_csv(args.from_file)
        unknown = sorted(set(wanted) - {p.tp for p in positions})
        if unknown:
            raise ValueError(f"{args.from_file}: not partitions of the spec's topics: "
                             + ", ".join(f"{t}[{q}]" for t, q in unknown))
        return {p.tp: wanted[p.tp] for p in rows if p.tp in wanted}
    if args.to_earliest:
        return {p.tp: p.log_start for p in rows}
    if args.to_latest:
        return {p.tp: p.log_end for p in rows}
    if args.to_offset is not None:
        return {p.tp: args.to_offset for p in rows}
    if args.shift_by is not None:
        return {p.tp: p.start + args.shift_by for p in rows}
    ms = parse_datetime(args.to_datetime)
    found = consumer.offsets_for_times([TopicPartition(p.topic, p.partition, ms) for p in rows], timeout=10)
    by_tp = {(f.topic, f.partition): f.offset for f in found}
    # No record at or after the time: the log end, as kafka-consumer-groups does.
    return {p.tp: by_tp[p.tp] if by_tp.get(p.tp, -1) >= 0 else p.log_end for p in rows}


def make_plan(asked: dict, positions) -> Plan:
    moves = []
    for p in positions:
        if p.tp not in asked:
            continue
        want = asked[p.tp]
        new, clamped = min(max(want, p.log_start), p.log_end), ""
        if want < p.log_start:
            clamped = "log start"
        elif want > p.log_end:
            clamped = "log end"
        moves.append(Move(p.topic, p.partition, p.start, p.sink, new, clamped, want))
    return Plan(moves)


def refusal(members) -> str | None:
    """Why the reset must not run while the group is as ``members`` (``kpipe.ops.members``)
    says, or None. Like kafka-consumer-groups: only an Empty (or Dead) group is reset."""
    if members.state is None:
        return f"cannot tell whether the group has members ({members.note}); not resetting"
    if members.state in ("EMPTY", "DEAD"):
        return None
    if members.members:
        names = ", ".join(f"{m.label} ({m.member_id})" for m in members.members)
        return f"the group is {members.state.lower()} with active members: {names}; stop them first"
    # Tansu (the bundled broker) names no members of a running group; its state still tells.
    return (f"the group is {members.state.lower()}: a member is running (the broker names none); "
            f"stop it first")


def replay_warnings(spec, plan: Plan) -> list[str]:
    """What a replay does to the sink's data that the operator should know before executing."""
    back = [m for m in plan.moves if m.new < m.current]
    if not back:
        return []
    n = sum(m.current - m.new for m in back)
    cfg, kind = spec.sink_config, spec.sink_type
    if kind in ("sql", "postgres") and cfg.get("mode", "insert") == "insert":
        return [f"replay: {n} offsets are read again into the insert-mode table {cfg.get('table')}, which "
                f"already has their rows: they will be there twice. Use mode: upsert with a key, or a new table"]
    if kind == "files":
        return [f"replay: the files holding the {n} offsets read again are moved aside into "
                f".replaced-* directories of their partitions (kept, not deleted)"]
    if kind == "s3":
        return [f"replay: {n} offsets are written again; an object of the same offset range is replaced, one "
                f"cut at other offsets stays beside it (a new prefix avoids that)"]
    return [f"replay: {n} offsets are sent again to the {kind} sink"]


def commit_group(consumer, moves) -> None:
    """Commit the plan's positions to the group, every partition or a ``FatalError``."""
    from confluent_kafka import KafkaException

    offsets = [TopicPartition(m.topic, m.partition, m.new) for m in moves]
    if not offsets:
        return  # librdkafka refuses an empty commit
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise FatalError(f"committing to the group: {exc.args[0].str()}") from None
    failed = [f"{r.topic}[{r.partition}]: {r.error.str()}" for r in result or () if r.error is not None]
    if failed:
        raise FatalError("committing to the group: " + "; ".join(failed))
