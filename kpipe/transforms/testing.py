"""Run a spec's transforms on inline test cases, no broker needed: what ``kpipe test`` builds on.

A case (the ``tests:`` list of a spec, or of an example in ``docs/transforms.md``)::

    name: keeps big orders
    input:                       # value is required (null is a tombstone); the rest optional
      value: {"id": 1, "amount": 250}
      key: "order-1"             # text is the raw key's UTF-8; other YAML values are taken
                                 # as an already deserialized key
      headers: {source: web}     # text values become UTF-8 bytes, as Kafka delivers them
      timestamp: 1700000000000   # ms since the epoch
      topic: orders              # default: run_cases(topic=...)
      partition: 0
      offset: 0
    expect: {value: {"id": 1, "amount": 250}}    # or {dropped: true}
                                                 # or {error: {stage: transform, message: "substring"}}

With a ``deserializer``, ``input: {raw: '{"id": 1}'}`` is decoded first (stage ``deserialize``).
Values compare strictly: ``1``, ``1.0`` and ``true`` are three different expectations.
"""
from __future__ import annotations

import difflib
import pprint
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from kpipe.api import DROP, BadRecordError, Deserializer, Metadata, Transform
from kpipe.plugins import registry

from . import ConfigError

__all__ = ["CASE_SCHEMA", "CaseResult", "FakeMessage", "build_transforms", "run_cases", "same"]

CASE_SCHEMA = {
    "type": "object",
    "required": ["input", "expect"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "input": {
            "type": "object",
            "additionalProperties": False,
            "oneOf": [{"required": ["value"]}, {"required": ["raw"]}],
            "properties": {
                "value": {},
                "raw": {"type": "string"},
                "key": {},
                "headers": {"oneOf": [
                    {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                    {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                                "prefixItems": [{"type": "string"},
                                                                {"type": ["string", "null"]}]}},
                ]},
                "timestamp": {"type": ["integer", "null"]},
                "topic": {"type": "string", "minLength": 1},
                "partition": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "value": {},
                "dropped": {"const": True},
                "error": {"type": "object", "additionalProperties": False, "properties": {
                    "stage": {"enum": ["deserialize", "transform"]},
                    "message": {"type": "string"},
                }},
            },
        },
    },
}
_CASE = Draft202012Validator(CASE_SCHEMA)


class FakeMessage:
    """A stand-in for ``confluent_kafka.Message`` with the methods ``Metadata`` reads."""

    __slots__ = ("_value", "_key", "_headers", "_timestamp", "_offset", "_topic", "_partition")

    def __init__(self, value: Any = None, key: Any = None, headers: list | None = None,
                 timestamp: int | None = None, offset: int = 0, topic: str = "test",
                 partition: int = 0):
        self._value, self._key, self._headers = value, key, headers
        self._timestamp, self._offset, self._topic, self._partition = timestamp, offset, topic, partition

    def value(self):
        return self._value

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def timestamp(self) -> tuple:
        return (0, None) if self._timestamp is None else (1, self._timestamp)

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def error(self):
        return None


@dataclass
class CaseResult:
    """The outcome of one case. ``expected`` and ``actual`` have the shape of ``expect``;
    ``error`` is the message of the error the record met, if any (whether or not expected)."""

    name: str
    ok: bool
    expected: dict
    actual: dict
    error: str | None = None
    fatal: bool = field(default=False, repr=False)
    """The transform raised something other than a bad-record error: the run would stop."""

    def diff(self) -> str:
        """A readable unified diff of expected against actual; empty when the case passed."""
        if self.ok:
            return ""
        want = pprint.pformat(self.expected, width=88, sort_dicts=True).splitlines()
        got = pprint.pformat(self.actual, width=88, sort_dicts=True).splitlines()
        return "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))


def build_transforms(transforms: list) -> list[tuple[str, Transform]]:
    """Validate and create each ``{NAME: CONFIG}`` of a ``transforms:`` list, in order.

    Raises ``ConfigError`` with ``path`` from the spec's root (``("transforms", 0, "filter")``);
    a missing extra surfaces as the ``FatalError`` of ``TransformPlugin.create``.
    """
    built = []
    reg = registry()
    for index, entry in enumerate(transforms):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError("a transform is a one-key mapping, NAME: CONFIG", ("transforms", index))
        (name, config), = entry.items()
        plugin = reg.get("transform", name)
        if plugin is None:
            raise ConfigError(f"unknown transform {name!r} (installed: {', '.join(reg.names('transform'))})",
                              ("transforms", index))
        problem = next(iter(Draft202012Validator(plugin.config_schema).iter_errors(config)), None)
        if problem is not None:
            raise ConfigError(f"{name}: {problem.message}", ("transforms", index, name, *problem.absolute_path))
        try:
            built.append((name, plugin.create(config)))
        except ConfigError as exc:
            raise ConfigError(str(exc), ("transforms", index, name, *exc.path), exc.offset) from None
        except ValueError as exc:  # a third-party plugin's own refusal
            raise ConfigError(f"{name}: {exc}", ("transforms", index, name)) from None
    return built


def run_cases(transforms: list[dict], cases: list[dict], topic: str = "test", *,
              deserializer: Deserializer | None = None,
              key_deserializer: Deserializer | None = None) -> list[CaseResult]:
    """Run each case through ``transforms`` (created once, applied in order to a one-record
    ``Metadata``) and compare with its ``expect``.

    Raises ``ConfigError`` (a ``ValueError``) for an invalid transform list or case, with a
    ``path`` from the spec's root: ``("transforms", i, NAME, ...)`` or ``("tests", i, ...)``.
    """
    built = build_transforms(transforms)
    for index, case in enumerate(cases):
        problem = next(iter(_CASE.iter_errors(case)), None)
        if problem is not None:
            raise ConfigError(f"test case: {problem.message}", ("tests", index, *problem.absolute_path))
        if "raw" in case["input"] and deserializer is None:
            raise ConfigError("test case: input.raw needs a deserializer", ("tests", index, "input", "raw"))
    return [_run(built, case, index, topic, deserializer, key_deserializer)
            for index, case in enumerate(cases)]


def _run(built, case, index, topic, deserializer, key_deserializer) -> CaseResult:
    name = case.get("name") or f"case {index + 1}"
    given, expected = case["input"], case["expect"]
    actual, error, fatal = _outcome(built, given, topic, deserializer, key_deserializer)
    if fatal:
        ok = False
    elif "error" in expected:
        want = expected["error"]
        got = actual.get("error")
        ok = got is not None and want.get("stage", got["stage"]) == got["stage"] \
            and want.get("message", "") in got["message"]
    else:
        ok = same(expected, actual)
    return CaseResult(name, ok, expected, actual, error, fatal)


def _outcome(built, given, topic, deserializer, key_deserializer) -> tuple[dict, str | None, bool]:
    key = given.get("key")
    if isinstance(key, str):
        key = key.encode()
    headers = given.get("headers")
    if isinstance(headers, dict):
        headers = list(headers.items())
    if headers is not None:
        headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
    raw_key = key if isinstance(key, (bytes, type(None))) else None
    message = FakeMessage(given.get("value"), raw_key, headers, given.get("timestamp"),
                          given.get("offset", 0), given.get("topic", topic), given.get("partition", 0))
    keys = None
    try:
        if key_deserializer is not None and raw_key is not None:
            keys = key_deserializer.deserialize([raw_key])
        elif raw_key is None and key is not None:
            keys = [key]  # written in the case as an already deserialized key
        if "raw" in given:
            values = deserializer.deserialize([given["raw"].encode()])
        else:
            values = [given["value"]]
    except BadRecordError as exc:
        return {"error": {"stage": "deserialize", "message": str(exc)}}, str(exc), False
    meta = Metadata(message.topic(), message.partition(), [message], keys)
    for name, transform in built:
        try:
            out = transform.apply(values, meta)
        except BadRecordError as exc:
            return {"error": {"stage": "transform", "message": str(exc)}}, str(exc), False
        except Exception as exc:
            text = f"{name} crashed: {type(exc).__name__}: {exc}"
            return {"error": {"stage": "transform", "message": text}}, text, True
        if not isinstance(out, list) or len(out) != 1:
            text = f"{name} returned {out!r} for one value: a transform returns one item per value"
            return {"error": {"stage": "transform", "message": text}}, text, True
        if out[0] is DROP:
            return {"dropped": True}, None, False
        values = out
    return {"value": values[0]}, None, False


def same(a: Any, b: Any) -> bool:
    """Deep equality that tells ``1``, ``1.0`` and ``True`` apart (Python's ``==`` does not)."""
    ta, tb = type(a), type(b)
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if ta in (list, tuple) and tb in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if ta in (bool, int, float) or tb in (bool, int, float):
        return ta is tb and a == b
    return a == b
