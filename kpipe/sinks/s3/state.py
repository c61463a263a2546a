"""Each partition's offset store: one small JSON object, changed only by compare-and-set.

``<prefix>/_kpipe/state/<topic>/<partition>.json``::

    {"next_offset": 1200,                       # everything before it is in committed objects
     "pending": {"start": 1200, "next": 1700,   # a batch being written: these keys may exist
                 "keys": ["raw/orders/...", ...]},
     "orphans": ["raw/orders/...", ...],        # keys of uncommitted batches, deleted on sight and
     "orphans_until": 1795000000.0}             # swept again until then (a zombie's late PUT)

Every write names the ETag it read (``If-Match``), or ``If-None-Match: *`` to create the object,
so a writer working from a stale copy gets 412 instead of overwriting: that is the fence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

__all__ = ["PartitionState", "state_key"]


def state_key(prefix: str, topic: str, partition: int) -> str:
    # _kpipe: Hive, Spark, Athena and Snowflake skip names starting with _ when listing a table.
    return "/".join(p for p in (prefix, "_kpipe", "state", topic, f"{partition}.json") if p)


@dataclass
class PartitionState:
    etag: str | None = None             # None: no state object exists yet
    next_offset: int | None = None      # None: nothing stored yet
    pending: dict | None = None
    orphans: list = field(default_factory=list)
    orphans_until: float = 0.0

    @classmethod
    def parse(cls, data: bytes, etag: str) -> "PartitionState":
        doc = orjson.loads(data)
        return cls(etag, doc.get("next_offset"), doc.get("pending"), list(doc.get("orphans") or ()),
                   float(doc.get("orphans_until") or 0.0))

    def body(self) -> bytes:
        doc: dict = {"next_offset": self.next_offset, "pending": self.pending}
        if self.orphans:
            doc["orphans"] = sorted(self.orphans)
            doc["orphans_until"] = self.orphans_until
        return orjson.dumps(doc)
