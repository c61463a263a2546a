"""``parse_timestamp``: read a timestamp field in one format and write it in another.

Epoch conversions use integer arithmetic on ``timedelta`` (never float seconds), so
``epoch_ms`` in, ``epoch_ms`` out is exact. Output is in UTC, except a strftime pattern, which
is rendered in ``timezone``.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from . import TIME_FORMATS, ConfigError, paths
from .base import RecordError, RecordTransform, parse_paths, short

__all__ = ["ParseTimestamp", "parse_zone"]

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = {"epoch_s": timedelta(seconds=1), "epoch_ms": timedelta(milliseconds=1),
          "epoch_us": timedelta(microseconds=1)}
_NUMBER = re.compile(r"\s*[+-]?[0-9]+(\.[0-9]*)?\s*", re.ASCII)


def parse_zone(name: str):
    if name.upper() in ("UTC", "Z"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"parse_timestamp: unknown time zone {name!r} (an IANA name such as "
                          "Europe/Berlin, or UTC)", ("timezone",)) from None


def _reader(fmt: str, zone) -> Callable[[Any], datetime]:
    if fmt == "iso8601":
        def read(x):
            if type(x) is not str:
                raise TypeError
            dt = datetime.fromisoformat(x[:-1] + "+00:00" if x.endswith(("Z", "z")) else x)
            return dt if dt.tzinfo is not None else dt.replace(tzinfo=zone)
        return read
    if fmt in _UNITS:
        unit = _UNITS[fmt]

        def read(x):
            t = type(x)
            if t is str and _NUMBER.fullmatch(x):
                x = float(x) if "." in x else int(x)
            elif t is not int and t is not float:
                raise TypeError
            return EPOCH + unit * x
        return read
    if "%" in fmt:
        def read(x):
            dt = datetime.strptime(x, fmt)
            return dt if dt.tzinfo is not None else dt.replace(tzinfo=zone)
        return read
    raise ConfigError(f"parse_timestamp: unknown format {fmt!r}: one of {', '.join(TIME_FORMATS)}, "
                      "or a strptime pattern such as '%Y-%m-%d %H:%M:%S'", ("format",))


def _writer(to: str, zone) -> Callable[[datetime], Any]:
    if to == "iso8601":
        def write(dt):
            text = dt.astimezone(UTC).isoformat()
            return text[:-6] + "Z"  # "+00:00" -> "Z"
        return write
    if to in _UNITS:
        unit = _UNITS[to]
        return lambda dt: (dt - EPOCH) // unit  # floor, exact
    if to == "datetime":
        return lambda dt: dt.astimezone(UTC)
    if "%" in to:
        return lambda dt: dt.astimezone(zone).strftime(to)
    raise ConfigError(f"parse_timestamp: unknown output {to!r}: one of {', '.join(TIME_FORMATS)}, "
                      "datetime, or a strftime pattern", ("to",))


class ParseTimestamp(RecordTransform):
    """Parse ``field`` as ``format`` and write it as ``to``, in place or into ``target``. A
    missing field is left missing, ``null`` stays ``null``, a value that does not parse is a
    bad record."""

    name = "parse_timestamp"

    def __init__(self, config):
        super().__init__(config)
        self._field = parse_paths([config["field"]], ("field",))[0]
        self._target = parse_paths([config["target"]], ("target",))[0] if config.get("target") else None
        zone = parse_zone(config.get("timezone", "UTC"))
        fmt = config.get("format", "iso8601")
        read, write = _reader(fmt, zone), _writer(config.get("to", "iso8601"), zone)
        shown = paths.show(self._field)

        def convert(x):
            if x is None:
                return None
            try:
                return write(read(x))
            except (ValueError, TypeError, OverflowError):
                raise RecordError(f"parse_timestamp: field {shown!r}: cannot parse {short(x)} "
                                  f"as {fmt}") from None
        self._convert = convert
        self._trie = paths.trie({self._field: convert})

    def one(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        if self._target is None:
            return paths.update(value, self._trie)
        found = paths.get(value, self._field)
        if found is paths.MISSING:
            return value
        try:
            return paths.set_in(value, self._target, self._convert(found))
        except paths.PathError as exc:
            raise RecordError(f"parse_timestamp: cannot write {paths.show(self._target)!r}: {exc}") from None
