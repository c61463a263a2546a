"""Avro named types across Schema Registry references: one schema that stands alone.

A registry schema may use a named type (``"kpipe.example.Money"``) that another subject defines
(its ``references``). fastavro decodes it given the named types, but sinks take their column types
and the avro format its writer schema from ``Deserializer.schema()``, which must parse on its
own. ``standalone`` defines each referenced type where the schema first uses it, and names it
by its full name after that, as Avro allows a type to be defined only once.
"""
from __future__ import annotations

from typing import Any

__all__ = ["fullname", "standalone"]

_NAMED = ("record", "error", "enum", "fixed")


def fullname(node: Any, namespace: str = "") -> str | None:
    """The full name a named type's definition gives it (Avro's rules: a dotted name is full;
    else its ``namespace``, else the enclosing one); None for anything else."""
    if not isinstance(node, dict) or node.get("type") not in _NAMED or not isinstance(node.get("name"), str):
        return None
    name = node["name"]
    if "." in name:
        return name
    ns = node.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def standalone(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with each type of ``defs`` (full name -> its definition's JSON) defined at its
    first use. ``schema`` itself is not changed."""
    if not defs:
        return schema
    defined: set[str] = set()

    def walk(node: Any, ns: str) -> Any:
        if isinstance(node, str):
            full = node if "." in node or not ns else f"{ns}.{node}"
            for name in (full, node):
                if name in defs:
                    if name in defined:
                        return name  # by its full name, which means the same in any namespace
                    body = {k: v for k, v in defs[name].items() if k != "namespace"}
                    # a full name keeps the type's own namespace wherever it is defined
                    return walk(dict(body, name=name) if "." in name else dict(body, name=name, namespace=""), ns)
            return node
        if isinstance(node, list):
            return [walk(n, ns) for n in node]
        if not isinstance(node, dict):
            return node
        out = dict(node)
        kind = node.get("type")
        name = fullname(node, ns)
        if name is not None:
            defined.add(name)
            ns = name.rpartition(".")[0]
            if kind in ("record", "error"):
                out["fields"] = [dict(f, type=walk(f.get("type"), ns)) if isinstance(f, dict) else f
                                 for f in node.get("fields") or ()]
        elif kind == "array":
            out["items"] = walk(node.get("items"), ns)
        elif kind == "map":
            out["values"] = walk(node.get("values"), ns)
        else:
            out["type"] = walk(kind, ns)
        return out

    return walk(schema, "")
