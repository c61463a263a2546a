"""A dataset's schema, kept in its sink's state and only ever widened.

The sink gives a ``SchemaStore``: ``update(change, publish)`` applies ``change(doc) -> doc``
to the stored document as one compare-and-set (the files sink under a lock with an atomic
rename, S3 with conditional PUTs), then ``publish(doc)`` writes what readers use beside the
data (``_common_metadata`` and the zero-row ``+schema.parquet`` for Parquet). The document::

    {"version": 3, "columns": {"id": "bigint", "price": "double", ...},
     "widened": [{"column": "price", "from": "bigint", "to": "double", "version": 3}],
     "avro": {...}}   # format avro without declared types: the writer schema every file uses

Every file is written with a schema the store already holds (the store is updated first), so a
crash between the two leaves a schema wider than the files, never a file wider than the schema.
"""
from __future__ import annotations

import logging
from typing import Callable

from kpipe.api import FatalError

from .dataset import SchemaConflict, declared, merge_declared, widen

__all__ = ["SchemaBook", "SchemaStore", "SCHEMA_FORMATS"]

SCHEMA_FORMATS = ("parquet", "avro", "csv")
"""The formats whose files carry a schema (types, or csv's header order); jsonl needs none."""


class SchemaStore:
    def update(self, change: Callable[[dict | None], dict | None], publish: Callable[[dict], None] | None,
               force: bool = False) -> dict | None:
        """Apply ``change`` to the stored document atomically and return what is stored after;
        call ``publish`` on it when it changed (or ``force``), before returning."""
        raise NotImplementedError


class SchemaBook:
    """The schema a sink writes its next file with (``schema_for``); thread-safe enough for one
    sink: a stale copy only costs one more round to the store."""

    def __init__(self, store: SchemaStore, columns: dict, value_schema=None, publish=None, log=None,
                 remember=None, typed: bool = True):
        """``remember(old, values, declared)``: a format's own part of the document (Avro's
        inferred writer schema, ``"avro"``), widened to hold ``values``; None to keep none."""
        self.remember = remember or (lambda old, values, fixed: old)
        self.typed = typed  # the files carry the types (csv keeps only the order: no warnings)
        self.store = store
        self.columns = columns
        self.value_schema = value_schema or (lambda: None)
        self.publish = publish
        self.log = log or logging.getLogger("kpipe.sink")
        self.doc: dict | None = None

    def schema_for(self, values: list) -> dict:
        """The dataset's schema document (``columns``, and ``avro`` where the format keeps one),
        widened (in the store first) to hold ``values`` where they can be."""
        fixed = declared(self.value_schema(), self.columns)
        doc = self.doc
        if doc is not None:
            try:
                have = merge_declared(doc["columns"], fixed)
            except SchemaConflict:
                have = None  # maybe stale: the store decides
            if have is not None and have == doc["columns"] and widen(have, values, fixed.keys())[0] == have \
                    and self.remember(doc.get("avro"), values, fixed) == doc.get("avro"):
                return doc
        widened: list = []

        def change(doc):
            widened.clear()  # a compare-and-set that lost runs this again on the fresh document
            cols = dict(doc["columns"]) if doc else {}
            try:
                cols = merge_declared(cols, fixed)
            except SchemaConflict as exc:
                raise FatalError(f"dataset schema: {exc}") from None
            cols, wid = widen(cols, values, fixed.keys())
            avro = self.remember((doc or {}).get("avro"), values, fixed)
            if doc is not None and cols == doc["columns"] and avro == doc.get("avro"):
                return doc
            version = (doc or {}).get("version", 0) + 1
            widened[:] = [{"column": c, "from": a, "to": b, "version": version} for c, a, b in wid]
            new = {"version": version, "columns": cols, "widened": list((doc or {}).get("widened", ())) + widened}
            if avro is not None:
                new["avro"] = avro
            return new

        doc = self.store.update(change, self.publish, force=self.doc is None)
        for w in widened if self.typed else ():
            self.log.warning("dataset schema: column %s widened from %s to %s (version %d); readers that fixed the "
                             "old type must read it as %s", w["column"], w["from"], w["to"], w["version"], w["to"])
        self.doc = doc
        return doc
