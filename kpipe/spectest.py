"""``kpipe test SPEC``: run a spec's inline test cases through its stages, with no broker.

Each case is one record: its decoded ``value`` (the deserializer is skipped) or its ``raw``
bytes (decoded by the spec's deserializer), plus optional key, headers, timestamp and
coordinates. It goes through the same ``Stages`` object ``kpipe run`` uses, so a passing case
shows what a run would hand the sink.
"""
from __future__ import annotations

import base64
import difflib
import json
from dataclasses import dataclass
from typing import Any

from kpipe.api import FatalError, KpipeError
from kpipe.runtime.stages import Stages
from kpipe.transforms.testing import FakeMessage, same

__all__ = ["CaseResult", "run_spec_tests", "format_report"]


@dataclass
class CaseResult:
    name: str
    ok: bool
    expected: Any
    actual: Any
    detail: str = ""


def _message(spec, inp: dict, deserializer=None) -> tuple[FakeMessage, Any, bool]:
    """The case's record as a message, its decoded value, and whether that value is given."""
    if "raw_base64" in inp:
        raw = base64.b64decode(inp["raw_base64"])
    elif "json" in inp:  # a binary format's value written as JSON (protobuf), encoded by its deserializer
        encode = getattr(deserializer, "encode_json", None)
        if encode is None:
            raise FatalError(f"input 'json' needs a deserializer that encodes JSON (protobuf); "
                             f"{spec.deserializer_type!r} does not: give 'raw' or 'value'")
        raw = encode(inp["json"], inp.get("topic", spec.topics[0]))
    elif "raw" in inp:
        raw = None if inp["raw"] is None else inp["raw"].encode()
    else:
        raw = b""  # stands in for the bytes behind the given value; never decoded
    key = inp.get("key")
    if isinstance(key, str):
        key = key.encode()
    headers = [(k, v.encode()) for k, v in (inp.get("headers") or {}).items()] or None
    msg = FakeMessage(value=raw, key=key, headers=headers, timestamp=inp.get("timestamp"),
                      offset=inp.get("offset", 0), topic=inp.get("topic", spec.topics[0]),
                      partition=inp.get("partition", 0))
    return msg, inp.get("value"), "value" in inp


def run_case(stages: Stages, spec, case: dict, index: int) -> CaseResult:
    name = case.get("name") or f"case {index + 1}"
    expect = case["expect"]
    try:
        msg, value, given = _message(spec, case["input"], stages.values)
    except KpipeError as exc:  # input 'json' that its deserializer cannot encode
        return CaseResult(name, False, expect, {"crash": f"{type(exc).__name__}: {exc}"})
    try:
        out = stages.process(msg.topic(), msg.partition(), [msg], [msg.value()],
                             decoded=[value] if given else None)
    except Exception as exc:  # a broken transform is a failed case, not a crash of the command
        return CaseResult(name, False, expect, {"crash": f"{type(exc).__name__}: {exc}"})
    if out.rejected:
        _, stage, exc = out.rejected[0]
        actual: dict = {"error": {"stage": stage, "message": str(exc)}}
    elif not out.values:
        actual = {"dropped": True}
    else:
        actual = {"value": out.values[0]}
    if "error" in expect:
        want = expect["error"]
        got = actual.get("error")
        ok = got is not None and got["stage"] == want.get("stage", got["stage"]) \
            and want.get("message", "") in got["message"]
    else:  # strict, as run_cases: 1, 1.0 and true are three different expectations
        ok = same(_plain(expect), _plain(actual))
    return CaseResult(name, ok, expect, actual)


def _plain(obj):
    """JSON-shaped data, so a datetime or bytes compares (and prints) as the sink would see it."""
    return json.loads(json.dumps(obj, default=_default, sort_keys=True))


def _default(obj):
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(bytes(obj)).decode()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def run_spec_tests(spec) -> list[CaseResult]:
    try:
        stages = Stages(spec, sink_parses=False)  # a case shows the decoded value
    except KpipeError as exc:  # e.g. an .avsc the deserializer cannot use: every case fails, no crash
        crash = {"crash": f"{type(exc).__name__}: {exc}"}
        return [CaseResult(case.get("name") or f"case {i + 1}", False, case["expect"], crash)
                for i, case in enumerate(spec.tests)]
    return [run_case(stages, spec, case, i) for i, case in enumerate(spec.tests)]


def format_report(spec, results: list[CaseResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r.ok else 'FAIL'}  {r.name}")
        if not r.ok:
            want = json.dumps(_plain(r.expected), indent=2, sort_keys=True).splitlines()
            got = json.dumps(_plain(r.actual), indent=2, sort_keys=True).splitlines()
            diff = difflib.unified_diff(want, got, "expected", "actual", lineterm="", n=3)
            lines += ["      " + d for d in diff]
    failed = sum(1 for r in results if not r.ok)
    lines.append(f"{spec.file}: {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
