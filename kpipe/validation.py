"""JSON Schema validation of decoded values: the ``validate`` stage.

A ``Validator`` is compiled once from a JSON Schema file (or a schema dict) with the
``jsonschema`` library: Draft 2020-12 unless the schema's ``$schema`` names another draft.
``format`` is an annotation, as the drafts define it, unless ``check_formats`` is true.

The valid path is one ``is_valid`` call per value; only a value that fails is validated again
to find the error and its JSON path, so a batch of good records pays nothing for messages.
``None`` (a tombstone) is never validated: what happens to tombstones is the runner's choice.

jsonschema costs ~40 µs per 100-byte record, some 50 times what decoding it costs. When ``jsonschema-rs``
is installed (``pip install "kpipe[fast-validate]"``), it answers ``is_valid`` first (~1 µs);
only what it rejects, or values it cannot take (a ``datetime`` from Avro, ``bytes``), go to
jsonschema, which alone decides that a value is invalid and explains why.
"""
from __future__ import annotations

import json
import os
from functools import partial
from operator import is_not
from typing import Any, Mapping

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

from kpipe.api import BadRecordError, FatalError
from kpipe.safe_read import UnreadableFile, read_regular_file

__all__ = ["Validator", "resolve_path", "read_json_file", "json_problem", "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]

MAX_JSON_BYTES = 4 << 20  # a JSON Schema or an .avsc; the largest real ones are a few hundred KB
MAX_JSON_DEPTH = 100      # levels of arrays and objects: past it, jsonschema and fastavro recurse too deep


def resolve_path(path: str, spec_file: str = "") -> str:
    """``path`` as given when absolute, else relative to the directory of ``spec_file`` (the
    current directory when ``spec_file`` is empty)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not spec_file:
        return path
    return os.path.join(os.path.dirname(spec_file) or ".", path)


def read_json_file(path: str, spec_file: str, what: str) -> tuple[str, Any]:
    """(the resolved path, its parsed JSON); ``FatalError`` naming ``what`` when it cannot be read:
    missing, not a regular file (a FIFO is never opened), over ``MAX_JSON_BYTES``, not JSON, or
    nested deeper than ``MAX_JSON_DEPTH``."""
    full = resolve_path(path, spec_file)
    value, problem = _load_json(full)
    if problem is not None:
        raise FatalError(f"{what}: {problem}")
    return full, value


def json_problem(path: str) -> str | None:
    """Why the JSON file at ``path`` (already resolved) cannot be used, or None: what
    ``read_json_file`` would raise, for ``kpipe validate`` to report at the spec's line."""
    return _load_json(path)[1]


def _load_json(full: str) -> tuple[Any, str | None]:
    try:
        data = read_regular_file(full, MAX_JSON_BYTES, "")
    except UnreadableFile as exc:
        return None, f"cannot read {full}: {exc.reason}"
    try:
        value = json.loads(data)
    except RecursionError:  # the C decoder's own limit, far past ours
        return None, f"{full} is nested more than {MAX_JSON_DEPTH} levels deep"
    except ValueError as exc:
        return None, f"{full} is not JSON: {exc}"
    if _too_deep(value, MAX_JSON_DEPTH):
        return None, f"{full} is nested more than {MAX_JSON_DEPTH} levels deep"
    return value, None


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels (without recursing)."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
    return False


class Validator:
    """A JSON Schema compiled once; checks lists of decoded values.

    ``schema`` is a path (resolved with ``resolve_path``) or an already loaded schema mapping.
    A missing or unreadable file, a file that is not JSON or a schema that is not valid for its
    draft raises ``FatalError``.
    """

    __slots__ = ("schema", "source", "_validator", "_is_valid", "_fast")

    def __init__(self, schema: str | os.PathLike | Mapping[str, Any], spec_file: str = "",
                 check_formats: bool = False, accelerate: bool = True):
        if isinstance(schema, (str, os.PathLike)):
            self.source, schema = read_json_file(os.fspath(schema), spec_file, "validate")
        else:
            self.source = "<schema>"
        if not isinstance(schema, (Mapping, bool)):
            raise FatalError(f"validate: {self.source} is not a JSON Schema (an object or a boolean)")
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "(root)"
            raise FatalError(f"validate: {self.source} is not a valid JSON Schema at {where}: {exc.message}") from None
        self.schema = schema
        """The JSON Schema as loaded (for sinks that want a schema, like ``Deserializer.schema()``)."""
        self._validator = cls(schema, format_checker=FormatChecker() if check_formats else None)
        self._is_valid = self._validator.is_valid
        self._fast = _fast_is_valid(schema, check_formats) if accelerate else None

    @property
    def accelerated(self) -> bool:
        """Whether jsonschema-rs answers the valid path."""
        return self._fast is not None

    def error(self, value: Any) -> str | None:
        """Why ``value`` does not match: ``"$.path.to.field: message"``; None when it matches."""
        return None if self._valid(value) else self._explain(value)

    def check(self, values: list) -> list[tuple[int, str]]:
        """``(index, message)`` of every value that does not match, in order; ``[]`` when all do."""
        if self._all_valid(values):
            return []
        return [(i, self._explain(values[i])) for i in self._invalid(values)]

    def validate(self, values: list) -> None:
        """Raise ``BadRecordError(index=i)`` for the first value that does not match."""
        if self._all_valid(values):
            return
        for i in self._invalid(values):
            raise BadRecordError(f"does not match {os.path.basename(self.source)}: {self._explain(values[i])}",
                                 index=i)

    def _all_valid(self, values: list) -> bool:
        """The common path: one C-level pass, True when every value is valid."""
        if self._fast is None:
            return all(map(self._py_valid, filter(_not_none, values)))
        try:
            return all(map(self._fast, filter(_not_none, values)))
        except Exception:  # a type jsonschema-rs does not take (datetime, bytes): go value by value
            return False

    def _valid(self, value: Any) -> bool:
        if self._fast is not None:
            try:
                if self._fast(value):
                    return True
            except Exception:
                pass
        return self._py_valid(value)  # jsonschema has the last word on an invalid value

    def _py_valid(self, value: Any) -> bool:
        try:
            return self._is_valid(value)
        except Unresolvable as exc:
            raise FatalError(f"validate: {self.source}: cannot resolve a $ref: {exc}") from None

    def _invalid(self, values: list):
        """Indexes of the values that do not match, in order."""
        valid = self._valid
        return (i for i, v in enumerate(values) if v is not None and not valid(v))

    def _explain(self, value: Any) -> str:
        err = best_match(self._validator.iter_errors(value))
        if err is None:  # is_valid and iter_errors disagree: cannot happen with jsonschema
            return "$: does not match"
        return f"{err.json_path}: {_short(err.message)}"


_not_none = partial(is_not, None)  # C-level, unlike a lambda


def _fast_is_valid(schema, check_formats: bool):
    """jsonschema-rs's ``is_valid`` for ``schema``, or None when it is not installed or cannot
    compile the schema (a draft it does not know): then jsonschema does everything."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    try:
        try:  # offline: never fetch a remote $ref, as jsonschema does not
            return jsonschema_rs.validator_for(schema, validate_formats=check_formats, offline=True).is_valid
        except TypeError:  # a jsonschema-rs without the offline option
            return jsonschema_rs.validator_for(schema, validate_formats=check_formats).is_valid
    except Exception:
        return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
