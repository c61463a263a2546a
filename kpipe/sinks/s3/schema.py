"""The S3 sink's dataset schema store: ``<prefix>/_kpipe/schema.json``, or with the
``kafka-connect`` layout one per topic, ``<prefix>/_kpipe/schema/<topic>.json``.

Shared by every partition and every ``kpipe run`` writing the dataset, and changed only by
compare-and-set (``If-Match`` its ETag, ``If-None-Match: *`` to create it): a writer that read
an older copy gets 412, reads again and widens from there, so no widening is lost.

The reader files (Parquet's ``_common_metadata`` and ``+schema.parquet`` at the dataset's root:
the prefix, or ``<prefix>/<topics_dir>/<topic>/``, the directory a table over Connect's layout
is defined on) are written after each change, then the state is read again: if it moved on
meanwhile, they are written again from the newer copy. The last of these writes is therefore always of the newest
schema, whichever writer's PUT lands last.
"""
from __future__ import annotations

import orjson

from kpipe.api import RetryableError
from kpipe.formats import SchemaStore

from .store import Precondition, Store

__all__ = ["S3SchemaStore", "schema_key"]

_TRIES = 50  # compare-and-set rounds before giving up to the runner's retry


def schema_key(prefix: str, topic: str | None = None) -> str:
    """The state object of the prefix's dataset, or of ``topic``'s (the kafka-connect layout)."""
    tail = ("_kpipe", "schema.json") if topic is None else ("_kpipe", "schema", f"{topic}.json")
    return "/".join(p for p in (prefix, *tail) if p)


class S3SchemaStore(SchemaStore):
    def __init__(self, store, prefix: str, topic: str | None = None, root: str | None = None):
        """``store``: a callable returning the sink's ``Store`` (it exists once the sink is open);
        ``topic``: the dataset is that topic's alone; ``root``: where the reader files go
        (default ``prefix``)."""
        self.store = store
        self.root = prefix if root is None else root
        self.key = schema_key(prefix, topic)

    def _get(self, s: Store):
        found = s.get(self.key, "reading the dataset schema")
        return (None, None) if found is None else (orjson.loads(found[0]), found[1])

    def update(self, change, publish, force: bool = False):
        s = self.store()
        for _ in range(_TRIES):
            old, etag = self._get(s)
            doc = change(old)
            if doc is old:
                break
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                s.call("writing the dataset schema", "put_object", Key=self.key, ContentType="application/json",
                       Body=orjson.dumps(doc, option=orjson.OPT_INDENT_2), **condition)
            except Precondition:
                continue  # another writer changed it: widen its copy
            break
        else:
            raise RetryableError("s3: the dataset schema kept changing while it was widened")
        if publish is not None and doc is not None and (doc is not old or force):
            self._publish(s, doc, publish)
        return doc

    def _publish(self, s: Store, doc: dict, publish) -> None:
        for _ in range(_TRIES):
            for name, data in publish(doc).items():
                key = f"{self.root}/{name}" if self.root else name
                s.call(f"writing {key}", "put_object", Key=key, Body=data)
            newest, _etag = self._get(s)
            if newest is None or newest.get("version", 0) <= doc.get("version", 0):
                return
            doc = newest
