"""``set`` and ``filter``: transforms driven by CEL expressions (see ``kpipe.expressions``)."""
from __future__ import annotations

from kpipe.api import DROP, BadRecordError, Transform
from kpipe.expressions import Expression, ExpressionError, ExpressionSyntaxError

from . import ConfigError, paths
from .base import parse_paths, short

__all__ = ["Set", "Filter"]


def _compile(name: str, source: str, path: tuple) -> Expression:
    try:
        return Expression(source)
    except ExpressionSyntaxError as exc:
        raise ConfigError(f"{name}: {exc}", path, exc.offset) from None


class Set(Transform):
    """Set fields from expressions. Every expression sees the record as it came in (so two
    fields set in one step do not see each other: use two ``set`` steps for that). A dotted
    field creates the objects on its way. A failing expression is a bad record; a tombstone
    passes through; any other value that is not an object is a bad record."""

    def __init__(self, config):
        super().__init__(config)
        targets = parse_paths(config)
        self._exprs = [_compile("set", src, (field,)) for field, src in config.items()]
        self._names = [paths.show(t) for t in targets]
        self._targets = targets
        self._flat = [t[0] for t in targets] if all(len(t) == 1 for t in targets) else None

    def apply(self, values, meta):
        exprs = list(zip(self._names, self._exprs))
        flat, targets = self._flat, self._targets
        out = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                if value is None:
                    out.append(None)
                    continue
                raise BadRecordError(f"set: expected an object, got {type(value).__name__} {short(value)}",
                                     index=i)
            results = []
            for name, expr in exprs:
                try:
                    results.append(expr.evaluate(value, meta, i))
                except ExpressionError as exc:
                    raise BadRecordError(f"set: field {name!r} ({expr.source}): {exc}", index=i) from None
            if flat is not None:
                new = dict(value)
                new.update(zip(flat, results))
            else:
                new = value
                for target, result in zip(targets, results):
                    try:
                        new = paths.set_in(new, target, result)
                    except paths.PathError as exc:
                        raise BadRecordError(f"set: cannot write {paths.show(target)!r}: {exc}",
                                             index=i) from None
            out.append(new)
        return out


class Filter(Transform):
    """Keep the records the expression is ``true`` for; ``DROP`` those it is ``false`` for.
    Any other result, or a failing expression, is a bad record. A tombstone passes through
    (the pipeline's tombstone handling decides about it)."""

    def __init__(self, config):
        super().__init__(config)
        self._expr = _compile("filter", config, ())

    def apply(self, values, meta):
        expr = self._expr
        if not (expr.uses_value or expr.meta_fields or expr.extensions):
            # The common case, `amount > 100 && country == "DE"`: contexts are the named fields.
            run, names = expr.run_unchecked, expr.fields
            try:
                results = [run({n: v[n] for n in names if n in v}) if v is not None else True
                           for v in values]  # a tombstone is kept
            except Exception:  # a missing field, a string value...: find the record below
                results = None
            if results is not None and set(map(type, results)) <= {bool}:
                return [v if r else DROP for v, r in zip(values, results)]
        return self._slow(values, meta)

    def _slow(self, values, meta):
        expr, out = self._expr, []
        for i, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                result = expr.evaluate(value, meta, i)
            except ExpressionError as exc:
                raise BadRecordError(f"filter ({expr.source}): {exc}", index=i) from None
            if result is True:
                out.append(value)
            elif result is False:
                out.append(DROP)
            else:
                raise BadRecordError(f"filter ({expr.source}): the result is {short(result)}, "
                                     "not true or false", index=i)
        return out
