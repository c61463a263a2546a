"""``kpipe offsets show | reset | export``: see and move a pipeline's position where it lives.

Exit codes as ``kpipe lag``: 0 done, 1 usage or a refused reset (active members, a stale plan,
a sink that cannot move its position), 2 a runtime failure, 3 Kafka or the sink unreachable.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict

from kpipe.api import FatalError, OffsetConflict

__all__ = ["cmd_offsets", "format_positions", "positions_json"]

from kpipe.ops.exits import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, failures, report_failure


def _table(head: tuple, body: list, left=(0,)) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) if i in left or i == len(head) - 1 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in [head, *body]]


def _n(v) -> str:
    return "-" if v is None else str(v)


def format_positions(spec, rows) -> str:
    """``show``'s table: one line per partition, and the lag's total."""
    head = ("topic", "partition", "sink", "group", "log-start", "log-end", "lag", "next", "from")
    body = [(r.topic, str(r.partition), _n(r.sink), _n(r.group), str(r.log_start), str(r.log_end),
             str(r.lag), str(r.start), r.source) for r in rows]
    body.append(("total", "", "", "", "", str(sum(r.log_end for r in rows)), str(sum(r.lag for r in rows)), "", ""))
    return "\n".join([f"{spec.name} (group {spec.group}, sink {spec.sink_type})", *_table(head, body)])


def positions_json(spec, rows) -> dict:
    return {"pipeline": spec.name, "group": spec.group, "sink": spec.sink_type,
            "partitions": [{**{k: v for k, v in asdict(r).items() if k != "source"}, "lag": r.lag, "from": r.source}
                           for r in rows],
            "total": {"end": sum(r.log_end for r in rows), "lag": sum(r.lag for r in rows)}}


def _format_plan(spec, plan, execute: bool) -> str:
    head = ("topic", "partition", "current", "new", "")
    body = [(m.topic, str(m.partition), str(m.current), str(m.new),
             f"asked {m.asked}: clamped to the {m.clamped}" if m.clamped else "") for m in plan.moves]
    lines = [f"{spec.name} (group {spec.group}, sink {spec.sink_type}): "
             f"{'applied' if execute else 'dry run, nothing changes (--execute applies it)'}", *_table(head, body)]
    return "\n".join(lines + [f"warning: {w}" for w in plan.warnings])


def _plan_json(spec, plan, execute: bool, applied: bool) -> str:
    return json.dumps({"pipeline": spec.name, "group": spec.group, "sink": spec.sink_type, "execute": execute,
                       "applied": applied, "partitions": [asdict(m) for m in plan.moves],
                       "warnings": plan.warnings}, indent=2)


def cmd_offsets(args, spec) -> int:
    what = f"kpipe offsets {args.offsets_command}: {spec.file}"
    try:
        if args.offsets_command == "reset":
            return _reset(args, spec, what)
        from kpipe.ops.positions import read_positions
        rows = read_positions(spec)
    except failures() as exc:
        return report_failure(what, exc)
    if args.offsets_command == "export":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerows((r.topic, r.partition, r.start) for r in rows)
    elif args.json:
        print(json.dumps(positions_json(spec, rows), indent=2))
    else:
        print(format_positions(spec, rows))
    return EXIT_OK


def _reset(args, spec, what: str) -> int:
    from kpipe.ops.probe import open_sink, probe_consumer
    from kpipe.ops.members import read_members
    from kpipe.ops.offsets_reset import commit_group, make_plan, refusal, replay_warnings, targets
    from kpipe.ops.positions import read_positions
    from kpipe.plugins import registry

    why = refusal(read_members(spec))
    if why:
        print(f"{what}: refused: {why}", file=sys.stderr)
        return EXIT_USAGE
    caps = registry().get("sink", spec.sink_type).capabilities
    consumer = probe_consumer(spec)
    sink = None
    try:
        if caps.stores_offsets or (args.execute and caps.alter_offsets):
            sink, _ = open_sink(spec)
        positions = read_positions(spec, consumer, sink)
        try:
            plan = make_plan(targets(args, positions, consumer), positions)
        except (ValueError, OSError) as exc:
            print(f"{what}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        plan.warnings += replay_warnings(spec, plan)
        if caps.stores_offsets and not caps.alter_offsets:
            plan.warnings.append(f"the {spec.sink_type} sink keeps its position with the data and cannot move it "
                                 f"(no alter_offsets): a reset would change nothing it reads, so it is refused")
        elif not caps.stores_offsets:
            plan.warnings.append(f"the {spec.sink_type} sink keeps no position: only the group is moved")
        if not args.execute:
            print(_plan_json(spec, plan, False, False) if args.json else _format_plan(spec, plan, False))
            return EXIT_OK
        if caps.stores_offsets and not caps.alter_offsets:
            print(f"{what}: refused: the {spec.sink_type} sink cannot move its stored offsets", file=sys.stderr)
            return EXIT_USAGE
        if caps.alter_offsets and plan.moves:
            try:  # the sink first: its position is the one the next run starts from
                sink.alter_offsets(spec.group, {m.tp: m.new for m in plan.moves}, {m.tp: m.stored for m in plan.moves})
            except OffsetConflict as exc:
                print(f"{what}: refused: the sink's position moved since it was read ({exc}); "
                      f"nothing was changed, run the reset again", file=sys.stderr)
                return EXIT_USAGE
        try:
            commit_group(consumer, plan.moves)
        except FatalError as exc:
            moved = "the sink holds the new positions and the next run starts there; " if caps.alter_offsets else ""
            print(f"{what}: {moved}{exc}", file=sys.stderr)
            return EXIT_RUNTIME
        print(_plan_json(spec, plan, True, True) if args.json else _format_plan(spec, plan, True))
        return EXIT_OK
    finally:
        if sink is not None:
            sink.close()
        consumer.close()
