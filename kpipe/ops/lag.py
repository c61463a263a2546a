"""``kpipe lag SPEC``: per partition of the source topics, the pipeline's committed position,
the end offset (high watermark, fetched fresh from the broker) and the lag.

The position is the one the runner would resume from: the sink's own offset store when the
sink plugin declares ``stores_offsets`` (the sink is opened to read it), else the group's
committed offset. A partition with neither shows no position; its lag is what the next run
would read (``source.start: earliest``: end - low watermark; ``latest``: 0).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["PartitionLag", "gather", "with_members", "format_table", "to_json"]


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None   # the next offset the pipeline resumes from; None: no position yet
    end: int                # high watermark
    lag: int
    source: str             # where `committed` comes from: sink | group | none
    member: str | None = None  # ``client@host`` of the group member holding it, when the broker says


def gather(spec) -> list[PartitionLag]:
    """The lag of every partition of the spec's topics, from the positions ``kpipe offsets show``
    reads (``kpipe.ops.positions``). Raises ``DependencyUnavailable`` when Kafka or the sink stays
    unreachable, ``FatalError`` for anything else."""
    from kpipe.ops.positions import read_positions  # it reads through this module's helpers

    rows = []
    for p in read_positions(spec):
        committed = {"sink": p.sink, "group": p.group}.get(p.source)
        rows.append(PartitionLag(p.topic, p.partition, committed, p.log_end, p.lag,
                                 p.source if committed is not None else "none"))
    return rows


def totals(rows: list[PartitionLag]) -> dict:
    return {"committed": sum(r.committed or 0 for r in rows), "end": sum(r.end for r in rows),
            "lag": sum(r.lag for r in rows)}


def with_members(rows: list[PartitionLag], members) -> list[PartitionLag]:
    """``rows`` with each partition's holder from ``members`` (``kpipe.ops.members.Members``)."""
    owners = members.owners() if members is not None else {}
    for r in rows:
        m = owners.get((r.topic, r.partition))
        r.member = m.label if m is not None else None
    return rows


def _group_line(members) -> str:
    if members is None:
        return ""
    if not members.known:
        return f"; members unknown: {members.note}"
    if not members.members:
        return "; no members running"
    return f"; {len(members.members)} member{'s' if len(members.members) != 1 else ''}"


def format_table(spec, rows: list[PartitionLag], members=None) -> str:
    """The report as text; a ``member`` column when the broker named the partitions' holders."""
    show = any(r.member for r in rows)
    head = ("topic", "partition", "committed", "end", "lag", "from") + (("member",) if show else ())
    body = [(r.topic, str(r.partition), "-" if r.committed is None else str(r.committed), str(r.end),
             str(r.lag), r.source) + ((r.member or "-",) if show else ()) for r in rows]
    t = totals(rows)
    body.append(("total", "", str(t["committed"]), str(t["end"]), str(t["lag"]), "") + (("",) if show else ()))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 5, 6) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    title = f"{spec.name} (group {spec.group}, sink {spec.sink_type}{_group_line(members)})"
    return "\n".join([title, line(head), *(line(b) for b in body)])


def to_json(spec, rows: list[PartitionLag], members=None) -> str:
    doc = {"pipeline": spec.name, "group": spec.group, "sink": spec.sink_type,
           "partitions": [asdict(r) for r in rows], "total": totals(rows)}
    if members is not None:
        doc["group_state"] = members.state
        # null: the broker did not say who the members are (see members_note)
        doc["members"] = [{**asdict(m), "partitions": [list(tp) for tp in m.partitions]}
                          for m in members.members] if members.known else None
        if members.note:
            doc["members_note"] = members.note
    return json.dumps(doc, indent=2)
