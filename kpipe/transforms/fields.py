"""Field transforms: ``select``, ``drop``, ``rename``, ``cast``, ``flatten``, ``mask``, ``hash``.

All of them work on objects (dicts). A tombstone (``None``) passes through untouched; any other
value that is not an object (a string or bytes deserializer's output) is a bad record. Paths
are parsed once; a flat path list (the common case) takes a fast path with no recursion.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import orjson

from . import CAST_TYPES, ConfigError, HASH_ALGORITHMS, paths
from .base import RecordError, RecordTransform, parse_paths, short

__all__ = ["Select", "Drop", "Rename", "Cast", "Flatten", "Mask", "Hash"]

_KEEP = True  # a trie leaf for select and drop: the whole field


def _outer_trie(path_list: list[tuple]) -> dict:
    """A trie in listed order, where a listed field wins over paths inside it (``a`` beats
    ``a.b``, whichever comes first)."""
    root: dict = {}
    for path in path_list:
        node = root
        for part in path[:-1]:
            child = node.get(part)
            if child is _KEEP:
                break
            if child is None:
                child = node[part] = {}
            node = child
        else:
            node[path[-1]] = _KEEP
    return root


class _Listed(RecordTransform):
    """A transform of a list of whole fields; with top-level fields only, ``_one_flat`` runs."""

    def __init__(self, config):
        super().__init__(config)
        self._trie = _outer_trie(parse_paths(config))
        if all(v is _KEEP for v in self._trie.values()):
            self._keys = tuple(self._trie)
            self.one = self._one_flat

    def _one_flat(self, value):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class Select(_Listed):
    """Keep only the listed fields, in the listed order; a missing field is omitted."""

    name = "select"

    def _one_flat(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        return {k: value[k] for k in self._keys if k in value}

    def one(self, value):
        if not isinstance(value, dict):
            return self.not_object(value)
        return _select(value, self._trie)


def _select(d: dict, node: dict) -> dict:
    out = {}
    for key, sub in node.items():
        if key in d:
            value = d[key]
            if sub is _KEEP:
                out[key] = value
            elif isinstance(value, dict):
                inner = _select(value, sub)
                if inner:
                    out[key] = inner
    return out


class Drop(_Listed):
    """Remove the listed fields; a missing field is ignored."""

    name = "drop"

    def __init__(self, config):
        super().__init__(config)
        self._drop = frozenset(self._trie)

    def _one_flat(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        drop = self._drop
        if drop.isdisjoint(value):
            return value  # nothing to drop: the same object, nothing was changed
        return {k: v for k, v in value.items() if k not in drop}

    def one(self, value):
        if not isinstance(value, dict):
            return self.not_object(value)
        return _drop(value, self._trie)


def _drop(d: dict, node: dict) -> dict:
    out = None
    for key, sub in node.items():
        if key not in d:
            continue
        if sub is _KEEP:
            out = dict(d) if out is None else out
            del out[key]
            continue
        child = d[key]
        if isinstance(child, dict):
            new = _drop(child, sub)
            if new is not child:
                out = dict(d) if out is None else out
                out[key] = new
    return d if out is None else out


class Rename(RecordTransform):
    """Rename fields (``old: new``), all at once, so ``{a: b, b: a}`` swaps. The renamed field
    replaces a field already called ``new``; a missing ``old`` is ignored. A top-level field
    keeps its position; dotted paths move values between levels."""

    name = "rename"

    def __init__(self, config):
        super().__init__(config)
        olds = parse_paths(config)
        news = []
        for old, new in zip(olds, config.values()):
            try:
                news.append(paths.parse(new))
            except ValueError as exc:
                raise ConfigError(str(exc), (paths.show(old),)) from None
        seen: dict = {}
        for old, new in zip(olds, news):
            if new in seen:
                raise ConfigError(f"{paths.show(seen[new])!r} and {paths.show(old)!r} are both renamed to "
                                  f"{paths.show(new)!r}", (paths.show(old),))
            seen[new] = old
        self._pairs = list(zip(olds, news))
        if all(len(o) == 1 and len(n) == 1 for o, n in self._pairs):
            self._map = {o[0]: n[0] for o, n in self._pairs}
            self._targets = frozenset(self._map.values()) - self._map.keys()
            self.one = self._one_flat

    def _one_flat(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        ren = self._map
        if self._targets.isdisjoint(value):
            return {ren.get(k, k): v for k, v in value.items()}
        # A field already holds a new name: it gives way only if its rename happens.
        taken = {new for old, new in ren.items() if old in value}
        return {ren.get(k, k): v for k, v in value.items() if k in ren or k not in taken}

    def one(self, value):
        if not isinstance(value, dict):
            return self.not_object(value)
        moved = []
        for old, new in self._pairs:
            value, found = paths.pop(value, old)
            if found is not paths.MISSING:
                moved.append((new, found))
        for new, found in moved:
            try:
                value = paths.set_in(value, new, found)
            except paths.PathError as exc:
                raise RecordError(f"rename: cannot write {paths.show(new)!r}: {exc}") from None
        return value


# --- cast ----------------------------------------------------------------------------------

_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _to_int(x):
    t = type(x)
    if t is int:
        return x
    if t is bool:
        return int(x)
    if t is float and x.is_integer():  # 2.0 -> 2; 2.5 is refused rather than truncated
        return int(x)
    if t is str and _INT_TEXT.fullmatch(x):
        return int(x)
    raise ValueError


def _to_float(x):
    t = type(x)
    if t is float:
        if math.isfinite(x):
            return x
    elif t is int or t is bool:
        return float(x)
    elif t is str and _FLOAT_TEXT.fullmatch(x):
        result = float(x)
        if math.isfinite(result):
            return result
    raise ValueError


def _to_bool(x):
    t = type(x)
    if t is bool:
        return x
    if (t is int or t is float) and x in (0, 1):
        return x == 1
    if t is str:
        low = x.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError


def _to_string(x):
    t = type(x)
    if t is str:
        return x
    if t is bool:
        return "true" if x else "false"
    if t is int or t is float:
        return repr(x)
    if t is bytes:
        return x.decode()
    if t is dict or t is list:
        return orjson.dumps(x).decode()
    iso = getattr(x, "isoformat", None)
    return iso() if iso is not None else str(x)


def _ranged(bits: int):
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(x):
        n = _to_int(x)
        if not low <= n <= high:
            raise ValueError
        return n
    return convert


_CASTS = {"int": _to_int, "float": _to_float, "bool": _to_bool, "string": _to_string,
          "int8": _ranged(8), "int16": _ranged(16), "int32": _ranged(32), "int64": _ranged(64),
          "float32": _to_float, "float64": _to_float, "boolean": _to_bool}
assert set(_CASTS) == set(CAST_TYPES)


def _cast_leaf(field: str, type_name: str):
    convert = _CASTS[type_name]

    def leaf(x):
        if x is None:
            return None
        try:
            return convert(x)
        except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
            raise RecordError(f"cast: field {field!r}: cannot cast {short(x)} to {type_name}") from None
    return leaf


def _leaf_trie(name: str, path_list: list[tuple], make_leaf) -> dict:
    try:
        return paths.trie({p: make_leaf(paths.show(p)) for p in path_list})
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


class _Update(RecordTransform):
    """Replace the value of each listed field that exists; missing fields stay missing."""

    _trie: dict

    def one(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        return paths.update(value, self._trie)


class Cast(_Update):
    """Convert field types. ``null`` stays ``null``; a value that cannot be converted without
    losing information (``"abc"`` to int, ``2.5`` to int, ``300`` to int8) is a bad record."""

    name = "cast"

    def __init__(self, config):
        super().__init__(config)
        path_list = parse_paths(config)
        types = {paths.show(p): t for p, t in zip(path_list, config.values())}
        self._trie = _leaf_trie("cast", path_list, lambda field: _cast_leaf(field, types[field]))


class Mask(_Update):
    """Replace the value of each listed field with ``replacement`` (``null`` stays ``null``)."""

    name = "mask"

    def __init__(self, config):
        super().__init__(config)
        if isinstance(config, list):
            fields, replacement = config, "****"
        else:
            fields, replacement = config["fields"], config.get("replacement", "****")
        path_list = parse_paths(fields, () if isinstance(config, list) else ("fields",))
        self._trie = _leaf_trie("mask", path_list, lambda field: lambda x: x if x is None else replacement)


class Hash(_Update):
    """Replace each listed field with the hex digest of its value; with a ``salt``, an HMAC
    keyed with it. Text is hashed as UTF-8, bytes as they are, anything else as compact JSON
    (so ``42`` and ``"42"`` hash alike). ``null`` stays ``null``."""

    name = "hash"

    def __init__(self, config):
        super().__init__(config)
        algorithm = config.get("algorithm", "sha256")
        if algorithm not in HASH_ALGORITHMS:
            raise ConfigError(f"hash: unknown algorithm {algorithm!r}", ("algorithm",))
        salt = config.get("salt")
        if salt is not None and not salt:
            raise ConfigError("hash: salt is empty; give a secret, or leave the key out for a plain digest",
                              ("salt",))
        base = hmac.new(salt.encode(), digestmod=algorithm) if salt else hashlib.new(algorithm)
        dumps = orjson.dumps
        sort = orjson.OPT_SORT_KEYS

        def leaf(x):
            t = type(x)
            if t is str:
                data = x.encode()
            elif t is bytes:
                data = x
            elif x is None:
                return None
            else:
                data = dumps(x, option=sort)
            h = base.copy()
            h.update(data)
            return h.hexdigest()

        path_list = parse_paths(config["fields"], ("fields",))
        self._trie = _leaf_trie("hash", path_list, lambda field: leaf)


class Flatten(RecordTransform):
    """Nested objects become top-level fields named ``outer<separator>inner``. Lists stay as they
    are unless ``arrays: index``. An empty object stays as ``{}``. Two fields that flatten to one
    name are a bad record rather than one silently overwriting the other."""

    name = "flatten"

    def __init__(self, config):
        super().__init__(config)
        config = config or {}
        self._sep = config.get("separator", "_")
        self._index = config.get("arrays", "keep") == "index"

    def one(self, value):
        if type(value) is not dict and not isinstance(value, dict):
            return self.not_object(value)
        out: dict = {}
        self._into(out, "", value.items())
        return out

    def _into(self, out: dict, prefix: str, items) -> None:
        sep, index = self._sep, self._index
        for key, value in items:
            name = prefix + key if type(key) is str else prefix + str(key)
            t = type(value)
            if t is dict and value:
                self._into(out, name + sep, value.items())
            elif t is list and index and value:
                self._into(out, name + sep, enumerate(value))
            elif name in out:
                raise RecordError(f"flatten: two fields flatten to {name!r}")
            else:
                out[name] = value
