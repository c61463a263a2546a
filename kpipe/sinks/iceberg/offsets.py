"""Where a group's positions live: the summary of the newest snapshot that carries ``kpipe.offsets.<group>``, a JSON list of ``[topic, partition, next]``.

Each kpipe commit writes the group's whole map (the stored positions merged with the write's),
so the newest carrier is the complete answer, and a commit never forgets a partition it did not
write. Other writers' snapshots (another group, Spark compaction) simply carry no key."""
from __future__ import annotations

import json

__all__ = ["summary_key", "stored_positions", "carriers", "encode"]

PREFIX = "kpipe.offsets."


def summary_key(group: str) -> str:
    return PREFIX + group


def encode(positions: dict) -> str:
    return json.dumps(sorted([t, p, o] for (t, p), o in positions.items()), separators=(",", ":"))


def _lineage(table):
    """The table's snapshots, newest first. Not the parent chain: expiring a snapshot breaks it,
    and housekeeping keeps each group's newest carrier while expiring those between."""
    return sorted(table.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms), reverse=True)


def _props(snap) -> dict:
    return snap.summary.additional_properties if snap.summary is not None else {}


def stored_positions(table, group: str) -> dict:
    """The group's ``{(topic, partition): next offset}`` as the table stands (empty: none)."""
    key = summary_key(group)
    for snap in _lineage(table):
        raw = _props(snap).get(key)
        if raw is not None:
            return {(t, p): o for t, p, o in json.loads(raw)}
    return {}


def carriers(table) -> set:
    """The ids of the snapshots housekeeping must keep: for each group, the newest carrier."""
    seen, keep = set(), set()
    for snap in _lineage(table):
        for k in _props(snap):
            if k.startswith(PREFIX) and k not in seen:
                seen.add(k)
                keep.add(snap.snapshot_id)
    return keep
