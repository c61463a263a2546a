"""``python``: your own function as a transform, per record or per batch.

Record form, ``python: "package.module:function"``: ``function(value)`` or
``function(value, meta)`` returns the new value, or ``kpipe.api.DROP``. ``meta`` is a
``RecordMeta``. An exception becomes a bad record at that index, naming the exception.
Tombstones (``None``) pass through without a call.

Batch form, ``python: {function: "package.module:function", batch: true}``:
``function(values, meta)`` has the contract of ``Transform.apply``: it returns one item per
value and raises ``BadRecordError(index=i)`` for a bad record.

The module is imported at create time, so a typo is a spec error, not a runtime one.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from kpipe.api import BadRecordError, FatalError, Metadata, Transform

from . import ConfigError
from .base import short

__all__ = ["PythonTransform", "RecordMeta", "load_function"]


class RecordMeta:
    """The Kafka side of one record, read on first access: ``key``, ``headers`` (a dict of
    str to bytes, the last value of a repeated name), ``header_list`` (every header as a
    ``(name, value)`` pair, in order), ``timestamp`` (ms since the epoch, or None), ``topic``,
    ``partition``, ``offset``."""

    __slots__ = ("_meta", "_i")

    def __init__(self, meta: Metadata, i: int):
        self._meta = meta
        self._i = i

    @property
    def key(self) -> Any:
        return self._meta.key(self._i)

    @property
    def headers(self) -> dict:
        return self._meta.headers(self._i)

    @property
    def header_list(self) -> list:
        return self._meta.header_list(self._i)

    @property
    def timestamp(self) -> int | None:
        return self._meta.timestamp(self._i)

    @property
    def offset(self) -> int:
        return self._meta.offset(self._i)

    @property
    def topic(self) -> str:
        return self._meta.topic

    @property
    def partition(self) -> int:
        return self._meta.partition

    def __repr__(self) -> str:
        return f"RecordMeta({self.topic}[{self.partition}]@{self.offset})"


def load_function(target: str) -> Callable:
    """Import ``package.module:function`` (the part after ``:`` may be dotted, ``Class.method``)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"python: {target!r} is not package.module:function")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"python: cannot import {module_name!r}: {exc} (is it installed, or on "
                          "PYTHONPATH?)") from None
    except Exception as exc:  # the user's module failed while importing: say how
        raise ConfigError(f"python: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"python: {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"python: {target} is a {type(obj).__name__}, not a function")
    return obj


def _takes_meta(fn: Callable, target: str) -> bool:
    """True when ``fn`` accepts two positional arguments (value, meta); False for one."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature; give them the value only
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        return True
    if len(positional) == 1:
        return False
    raise ConfigError(f"python: {target} takes no arguments; it must take (value) or (value, meta)")


class PythonTransform(Transform):
    """A user function, loaded once; see the module docstring for both forms."""

    def __init__(self, config):
        super().__init__(config)
        if isinstance(config, str):
            self.target, self.batch = config, False
        else:
            self.target, self.batch = config["function"], bool(config.get("batch", False))
        self._fn = load_function(self.target)
        self._meta = False if self.batch else _takes_meta(self._fn, self.target)

    def apply(self, values: list, meta: Metadata) -> list:
        if self.batch:
            return self._apply_batch(values, meta)
        fn = self._fn
        try:
            if self._meta:
                out = [fn(v, RecordMeta(meta, i)) if v is not None else None for i, v in enumerate(values)]
            else:
                out = [fn(v) if v is not None else None for v in values]
        except Exception:  # find the record below; the function is pure, so running it again is safe
            out = None
        if out is not None and (None not in out or
                                not any(o is None and v is not None for o, v in zip(out, values))):
            return out
        return self._apply_one_by_one(values, meta)

    def _apply_one_by_one(self, values: list, meta: Metadata) -> list:
        fn, out = self._fn, []
        for i, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                result = fn(value, RecordMeta(meta, i)) if self._meta else fn(value)
            except BadRecordError as exc:
                raise BadRecordError(f"python {self.target}: {exc}", index=i) from None
            except Exception as exc:
                raise BadRecordError(f"python {self.target}: {type(exc).__name__}: {exc}", index=i) from exc
            if result is None:
                raise BadRecordError(f"python {self.target} returned None for {short(value)}: return the "
                                     "new value, or kpipe.api.DROP to filter the record out", index=i)
            out.append(result)
        return out

    def _apply_batch(self, values: list, meta: Metadata) -> list:
        try:
            out = self._fn(values, meta)
        except BadRecordError:
            raise
        except Exception as exc:
            raise FatalError(f"python {self.target} (batch) raised {type(exc).__name__}: {exc}; a batch "
                             "function raises BadRecordError(message, index=i) for a bad record") from exc
        if not isinstance(out, list) or len(out) != len(values):
            got = f"{len(out)} items" if isinstance(out, list) else type(out).__name__
            raise FatalError(f"python {self.target} (batch) returned {got} for {len(values)} values; "
                             "it must return a list with one item per value (DROP to filter one out)")
        return out
