"""JSON Schema validation of decoded values: the ``validate`` stage.

A ``Validator`` is compiled once from a JSON Schema file (or a schema dict) with the
``jsonschema`` library: Draft 2020-12 unless the schema's ``$schema`` names another draft.
``format`` is an annotation, as the drafts define it, unless ``check_formats`` is true.

The valid path is one ``is_valid`` call per value; only a value that fails is validated again
to find the error and its JSON path, so a batch of good records pays nothing for messages.
``None`` (a tombstone) is never validated: what happens to tombstones is the runner's choice.
"""
from __future__ import annotations

import json
import os
from functools import partial
from operator import is_not
from typing import Any, Mapping

from kpipe.api import BadRecordError, FatalError

__all__ = ["Validator", "VALIDATE_PROPERTY", "resolve_path", "read_json_file"]

VALIDATE_PROPERTY = {
    "type": "string",
    "minLength": 1,
    "description": "Path of a JSON Schema file; every decoded value (not tombstones) must match it. "
                   "Relative to the spec file's directory.",
}
"""The ``validate`` key of a deserializer's config schema."""


def resolve_path(path: str, spec_file: str = "") -> str:
    """``path`` as given when absolute, else relative to the directory of ``spec_file`` (the
    current directory when ``spec_file`` is empty)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not spec_file:
        return path
    return os.path.join(os.path.dirname(spec_file) or ".", path)


def read_json_file(path: str, spec_file: str, what: str) -> tuple[str, Any]:
    """(the resolved path, its parsed JSON); ``FatalError`` naming ``what`` when it cannot be read."""
    full = resolve_path(path, spec_file)
    try:
        with open(full, "rb") as f:
            return full, json.load(f)
    except OSError as exc:
        raise FatalError(f"{what}: cannot read {full}: {exc.strerror}") from None
    except ValueError as exc:
        raise FatalError(f"{what}: {full} is not JSON: {exc}") from None


class Validator:
    """A JSON Schema compiled once; checks lists of decoded values.

    ``schema`` is a path (resolved with ``resolve_path``) or an already loaded schema mapping.
    A missing or unreadable file, a file that is not JSON or a schema that is not valid for its
    draft raises ``FatalError``.
    """

    __slots__ = ("schema", "source", "_validator", "_is_valid")

    def __init__(self, schema: str | os.PathLike | Mapping[str, Any], spec_file: str = "",
                 check_formats: bool = False):
        from jsonschema import Draft202012Validator, FormatChecker
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

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

    def error(self, value: Any) -> str | None:
        """Why ``value`` does not match: ``"$.path.to.field: message"``; None when it matches."""
        if self._is_valid(value):
            return None
        return self._explain(value)

    def check(self, values: list) -> list[tuple[int, str]]:
        """``(index, message)`` of every value that does not match, in order; ``[]`` when all do."""
        is_valid = self._is_valid
        # One C-level pass over the values on the common path: every value valid.
        if all(map(is_valid, filter(_not_none, values))):
            return []
        return [(i, self._explain(v)) for i, v in enumerate(values)
                if v is not None and not is_valid(v)]

    def validate(self, values: list) -> None:
        """Raise ``BadRecordError(index=i)`` for the first value that does not match."""
        is_valid = self._is_valid
        if all(map(is_valid, filter(_not_none, values))):
            return
        for i, v in enumerate(values):
            if v is not None and not is_valid(v):
                raise BadRecordError(f"does not match {os.path.basename(self.source)}: {self._explain(v)}",
                                     index=i)

    def _explain(self, value: Any) -> str:
        from jsonschema.exceptions import best_match

        err = best_match(self._validator.iter_errors(value))
        if err is None:  # is_valid and iter_errors disagree: cannot happen with jsonschema
            return "$: does not match"
        return f"{err.json_path}: {_short(err.message)}"


_not_none = partial(is_not, None)  # C-level, unlike a lambda


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
