"""Sizes (``16MiB``) and durations (``1.5s``) as written in a spec.

The patterns here are the ones in ``pipeline.schema.json``; a test keeps them equal.
"""
from __future__ import annotations

import re

__all__ = ["SIZE_PATTERN", "DURATION_PATTERN", "SIZE_UNITS", "DURATION_UNITS",
           "parse_size", "parse_duration"]

SIZE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
              "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)? ?(B|KB|MB|GB|KiB|MiB|GiB)$"
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(B|KB|MB|GB|KiB|MiB|GiB)")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_size(value: int | str) -> int:
    """Bytes for an integer or a string such as ``16MiB``; raises ``ValueError`` otherwise.

    Units are case-sensitive: ``MB`` is 10**6, ``MiB`` is 2**20, and ``mb`` is an error.
    """
    if isinstance(value, bool):  # bool is an int subclass, and never a size
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 16MiB, 500KB or 1048576)")
    number, unit = match.groups()
    return int(float(number) * SIZE_UNITS[unit])


def parse_duration(value: str) -> float:
    """Seconds for a string such as ``250ms``, ``1.5s``, ``2m`` or ``1h``; raises ``ValueError`` otherwise."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 5s, 2m or 1h)")
    number, unit = match.groups()
    return float(number) * DURATION_UNITS[unit]
