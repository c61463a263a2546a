"""Dotted field paths, parsed once at create time and applied without mutating the input.

``a.b.c`` reaches into nested objects; ``a\\.b`` is one field named ``a.b``. Transforms must be
pure (the runner may apply them again to the same values), so every helper here returns a new
dict and copies only the objects on the way to what it changes.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "PathError", "parse", "show", "trie", "get", "set_in", "pop", "update"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class PathError(Exception):
    """A record does not have the shape a path needs (set ``a.b`` where ``a`` is a number)."""


def parse(path: str) -> tuple:
    """``"a.b\\.c"`` -> ``("a", "b.c")``. Raises ``ValueError`` for an empty segment."""
    if "\\" not in path:
        parts = tuple(path.split("."))
    else:
        parts, cur, chars = [], [], iter(path)
        for ch in chars:
            if ch == "\\":
                cur.append(next(chars, "\\"))
            elif ch == ".":
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur))
        parts = tuple(parts)
    if not all(parts):
        raise ValueError(f"{path!r} is not a field path: a segment is empty")
    return parts


def show(path: tuple) -> str:
    return ".".join(p.replace(".", "\\.") for p in path)


def trie(paths: dict) -> dict:
    """``{("a", "b"): leaf, ("c",): leaf}`` -> ``{"a": {"b": leaf}, "c": leaf}``.

    Leaves must not be dicts. A path inside another (``a`` and ``a.b``) raises ``ValueError``.
    """
    root: dict = {}
    for path, leaf in paths.items():
        node = root
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if type(node) is not dict:
                raise ValueError(f"{show(path)!r} is inside {show(path[:depth + 1])!r}, "
                                 "which is also listed")
        if path[-1] in node:
            raise ValueError(f"{show(path)!r} overlaps another listed field")
        node[path[-1]] = leaf
    return root


def get(d: dict, path: tuple) -> Any:
    """The value at ``path``, or ``MISSING`` (also when an object on the way is not a dict)."""
    for part in path:
        if not isinstance(d, dict):
            return MISSING
        d = d.get(part, MISSING)
        if d is MISSING:
            return MISSING
    return d


def set_in(d: dict, path: tuple, value: Any) -> dict:
    """A copy of ``d`` with ``value`` at ``path``; missing objects on the way are created.

    Raises ``PathError`` when something on the way exists but is not an object.
    """
    out = dict(d)
    if len(path) == 1:
        out[path[0]] = value
        return out
    head = path[0]
    child = out.get(head, MISSING)
    if child is MISSING or child is None:
        child = {}
    elif not isinstance(child, dict):
        raise PathError(f"{head!r} is {type(child).__name__}, not an object")
    out[head] = set_in(child, path[1:], value)
    return out


def pop(d: dict, path: tuple) -> tuple:
    """``(copy of d without path, the value)``; ``(d, MISSING)`` when there is nothing there."""
    head = path[0]
    if len(path) == 1:
        if head not in d:
            return d, MISSING
        out = dict(d)
        return out, out.pop(head)
    child = d.get(head)
    if not isinstance(child, dict):
        return d, MISSING
    new_child, value = pop(child, path[1:])
    if value is MISSING:
        return d, MISSING
    out = dict(d)
    out[head] = new_child
    return out, value


def update(d: dict, node: dict) -> dict:
    """A copy of ``d`` where each existing leaf of the trie ``node`` is replaced by
    ``leaf(value)``; missing paths are skipped. Each object on the way is copied once."""
    out = dict(d)
    for key, sub in node.items():
        value = out.get(key, MISSING)
        if value is MISSING:
            continue
        if type(sub) is dict:
            if isinstance(value, dict):
                out[key] = update(value, sub)
        else:
            out[key] = sub(value)
    return out
