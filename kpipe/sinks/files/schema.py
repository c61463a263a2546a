"""The files sink's dataset schema store: ``<path>/.kpipe/schema.json``.

Every partition of every ``kpipe run`` writing into ``<path>`` shares it. A change holds an
exclusive ``flock`` on ``.kpipe/schema.lock`` from reading the document to renaming the new one
into place (and the reader files it derives), so two writers never widen from the same old copy.
"""
from __future__ import annotations

import fcntl
import os

import orjson

from kpipe.api import FatalError
from kpipe.formats import SchemaStore

__all__ = ["FilesSchemaStore", "STATE_DIR"]

STATE_DIR = ".kpipe"  # a dot: pyarrow, DuckDB globs and Spark skip it as data


class FilesSchemaStore(SchemaStore):
    def __init__(self, root: str, atomic):
        """``atomic(dir, name, tmp_name, fill)``: the sink's temp file, fsync and rename."""
        self.root = root
        self.dir = os.path.join(root, STATE_DIR)
        self.path = os.path.join(self.dir, "schema.json")
        self.atomic = atomic

    def _read(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                return orjson.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FatalError(f"files sink: cannot read the dataset schema {self.path}: {exc}") from None

    def update(self, change, publish, force: bool = False):
        try:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(os.path.join(self.dir, "schema.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FatalError(f"files sink: cannot open {self.dir}/schema.lock: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            old = self._read()
            doc = change(old)
            if doc is not old:
                body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
                self.atomic(self.dir, "schema.json", f".schema.json.{os.getpid()}.tmp", lambda f: f.write(body))
            if publish is not None and doc is not None and (doc is not old or force):
                for name, data in publish(doc).items():
                    self.atomic(self.root, name, f".{name}.{os.getpid()}.tmp", lambda f, data=data: f.write(data))
            return doc
        finally:
            os.close(fd)  # closing releases the lock
