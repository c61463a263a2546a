"""What the built-in transforms share: one pass over a run of records, and the bad-record path."""
from __future__ import annotations

from typing import Any

from kpipe.api import BadRecordError, Transform

from . import ConfigError, paths

__all__ = ["RecordError", "RecordTransform", "parse_paths", "short"]


class RecordError(Exception):
    """One record cannot be transformed; ``RecordTransform.apply`` adds its index."""


class RecordTransform(Transform):
    """A transform that maps each value on its own, without metadata.

    Subclasses implement ``one(value) -> new value`` (or ``DROP``) and raise ``RecordError``
    for a bad record. ``apply`` runs ``one`` over the whole run in a single C-level ``map``;
    only when a record is bad does it walk the run again to find that record's index.
    """

    name = "transform"

    def apply(self, values: list, meta: Any) -> list:
        one = self.one
        try:
            return list(map(one, values))
        except RecordError:
            pass
        out = []
        for i, value in enumerate(values):
            try:
                out.append(one(value))
            except RecordError as exc:
                raise BadRecordError(str(exc), index=i) from None
        return out

    def one(self, value: Any) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def not_object(self, value: Any) -> Any:
        """What a field transform does with a value that is not an object: a tombstone
        (``None``) passes through untouched; anything else is a bad record."""
        if value is None:
            return None
        raise RecordError(f"{self.name}: expected an object, got {type(value).__name__} {short(value)}")


def parse_paths(fields, config_path: tuple = ()) -> list[tuple]:
    """Parse each dotted field of a CONFIG list or mapping's keys, as a ``ConfigError``."""
    out = []
    for i, field in enumerate(fields):
        try:
            out.append(paths.parse(field))
        except ValueError as exc:
            where = (*config_path, field) if isinstance(fields, dict) else (*config_path, i)
            raise ConfigError(str(exc), where) from None
    return out


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters, for messages about one record."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
