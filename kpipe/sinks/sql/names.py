"""Column names that fit the database's identifier limit.

PostgreSQL silently truncates a longer name to 63 bytes, so a field with a long name would get
a column under another name and every value would land as NULL. kpipe maps such a name itself,
deterministically (as dlt does): it keeps as much of the name as fits and appends a short hash
of the whole name, so two long names that share a prefix never meet, and a restarted sink maps
a field to the column an earlier run created.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Callable

__all__ = ["IDENTIFIER_LIMITS", "describe_limit", "fit_name", "namer"]

# dialect -> (maximum length, counted in bytes?); SQLite has no limit.
IDENTIFIER_LIMITS = {"postgresql": (63, True), "mysql": (64, False), "mariadb": (64, False)}
_TAG = 8  # hex digits of the hash: a collision among one table's long names is ~1 in 4e9


@lru_cache(maxsize=4096)
def fit_name(name: str, limit: int, in_bytes: bool) -> str:
    """``name`` when it fits, else its longest prefix that fits with ``_`` and a hash tag."""
    size = len(name.encode()) if in_bytes else len(name)
    if size <= limit:
        return name
    tag = hashlib.sha256(name.encode()).hexdigest()[:_TAG]
    room = limit - _TAG - 1
    head = name.encode()[:room].decode("utf-8", "ignore") if in_bytes else name[:room]
    return f"{head}_{tag}"


def namer(dialect: str) -> Callable[[str], str]:
    """The field name -> column name mapping for ``dialect``."""
    if dialect not in IDENTIFIER_LIMITS:
        return str
    limit, in_bytes = IDENTIFIER_LIMITS[dialect]
    return lambda name: fit_name(name, limit, in_bytes)


def describe_limit(dialect: str) -> str:
    limit, in_bytes = IDENTIFIER_LIMITS[dialect]
    return f"{limit} {'bytes' if in_bytes else 'characters'}"
