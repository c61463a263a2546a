"""Custom transforms, as docs/transforms.md shows them (tests/test_docs_transforms.py checks that
each Python block of that page is in this file, and runs the YAML examples that use it).

Run from the repository root, where ``examples.transforms_sample`` is importable.
"""
from __future__ import annotations

from kpipe.api import DROP, BadRecordError, Transform, TransformPlugin


# --- record form: one value in, one value (or DROP) out ----------------------------------

def add_vat(value):
    """Add a gross price; an order without a net price is a bad record (KeyError)."""
    return {**value, "gross": round(value["net"] * 1.19, 2)}


def route_by_header(value, meta):
    """Keep only records whose 'source' header is 'web', tagging them with their origin."""
    if meta.headers.get("source") != b"web":
        return DROP
    return {**value, "origin": f"{meta.topic}[{meta.partition}]@{meta.offset}"}


# --- batch form: the whole run of records, the contract of Transform.apply ---------------

def dedupe_lines(values, meta):
    """Drop order lines repeated within the run; a line without an id is a bad record."""
    seen, out = set(), []
    for i, value in enumerate(values):
        if "line_id" not in value:
            raise BadRecordError("order line without line_id", index=i)
        out.append(DROP if value["line_id"] in seen else value)
        seen.add(value["line_id"])
    return out


# --- a transform plugin: a Transform class and a descriptor for the entry point ----------

class Upper(Transform):
    """Upper-case the listed string fields."""

    def __init__(self, config):
        super().__init__(config)
        self.fields = list(config)

    def apply(self, values, meta):
        out = []
        for i, value in enumerate(values):
            new = dict(value)
            for field in self.fields:
                if field in new:
                    if not isinstance(new[field], str):
                        raise BadRecordError(f"upper: {field!r} is not text", index=i)
                    new[field] = new[field].upper()
            out.append(new)
        return out


upper_plugin = TransformPlugin(
    name="upper",
    config_schema={"type": "array", "items": {"type": "string"}, "minItems": 1},
    factory="examples.transforms_sample:Upper",
    description="upper-case string fields",
)
