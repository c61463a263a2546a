"""The envelope JSON Schema, shipped inside the package (``pipeline.schema.json`` is a
symlink to ``schemas/pipeline.schema.json``, which a wheel build copies as a file)."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib.resources import files

__all__ = ["pipeline_schema", "cached_schema", "schema_default"]


@lru_cache(maxsize=1)
def cached_schema() -> dict:
    """The shared parsed schema; callers must not mutate it."""
    return json.loads(files(__package__).joinpath("pipeline.schema.json").read_text(encoding="utf-8"))


def pipeline_schema() -> dict:
    """A fresh copy of the pipeline envelope schema (JSON Schema draft 2020-12)."""
    return copy.deepcopy(cached_schema())


def schema_default(*path: str):
    """The ``default`` the schema declares for the property at ``path``, e.g. ``("batch", "max_age")``."""
    node = cached_schema()
    for name in path:
        node = node["properties"][name]
    return copy.deepcopy(node["default"])
