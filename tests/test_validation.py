"""JSON Schema validation of decoded values (``kpipe.validation.Validator``), with and without
the jsonschema-rs fast path: both must give the same answers."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from kit import ROOT
from kpipe.api import BadRecordError, FatalError
from kpipe.validation import Validator

ORDER_JSON_SCHEMA = ROOT / "schemas" / "order.schema.json"


@pytest.fixture(params=[True, False], ids=["jsonschema-rs", "jsonschema"])
def accelerate(request):
    if request.param:
        pytest.importorskip("jsonschema_rs")
    return request.param


def good_order(i: int) -> dict:
    return {"order_id": i, "customer": "c", "country": "DE", "amount": 1.5,
            "created_at": "2026-11-26T12:00:00Z"}


def test_the_fast_path_is_used_when_installed():
    pytest.importorskip("jsonschema_rs")
    assert Validator(str(ORDER_JSON_SCHEMA)).accelerated
    assert not Validator(str(ORDER_JSON_SCHEMA), accelerate=False).accelerated


def test_validator_passes_valid_values_and_skips_tombstones(accelerate):
    v = Validator(str(ORDER_JSON_SCHEMA), accelerate=accelerate)
    values = [good_order(i) for i in range(100)] + [None]
    assert v.check(values) == []
    v.validate(values)
    assert v.error(values[0]) is None
    assert v.schema == json.loads(ORDER_JSON_SCHEMA.read_text())


def test_validator_names_the_json_path_of_each_failure(accelerate):
    v = Validator(str(ORDER_JSON_SCHEMA), accelerate=accelerate)
    values = [good_order(0), good_order(1) | {"amount": "12"}, None, good_order(3),
              {k: x for k, x in good_order(4).items() if k != "country"}]
    assert v.check(values) == [(1, "$.amount: '12' is not of type 'number'"),
                               (4, "$: 'country' is a required property")]
    with pytest.raises(BadRecordError) as info:
        v.validate(values)
    assert info.value.index == 1 and "$.amount" in str(info.value) and "order.schema.json" in str(info.value)
    assert v.error(values[4]) == "$: 'country' is a required property"


def test_validator_takes_values_that_are_not_json(accelerate):
    """Avro gives datetimes, the bytes deserializer bytes: jsonschema-rs refuses those types, so
    they take the jsonschema path, where a datetime is not a string."""
    v = Validator({"type": "object", "properties": {"at": {"type": "string"}}}, accelerate=accelerate)
    values = [{"at": "now"}, {"x": dt.datetime(2026, 1, 1)}, {"at": dt.datetime(2026, 1, 1)}, {"at": "later"}]
    assert [i for i, _ in v.check(values)] == [2]
    assert Validator({"type": "string"}, accelerate=accelerate).check([b"x", "y"])[0][0] == 0


def test_validator_nested_paths_and_schema_dicts(accelerate):
    v = Validator({"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"sku": {"type": "string"}}}}}}, accelerate=accelerate)
    assert v.check([{"items": [{"sku": "a"}, {"sku": 7}]}]) == [(0, "$.items[1].sku: 7 is not of type 'string'")]


def test_validator_honors_dollar_schema(tmp_path, accelerate):
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "maximum": 10, "exclusiveMaximum": True}
    (tmp_path / "d4.json").write_text(json.dumps(draft4))
    v = Validator("d4.json", spec_file=str(tmp_path / "spec.yaml"), accelerate=accelerate)
    assert v.check([9, 10]) == [(1, "$: 10 is greater than or equal to the maximum of 10")]
    (tmp_path / "d2020.json").write_text(json.dumps({k: x for k, x in draft4.items() if k != "$schema"}))
    with pytest.raises(FatalError, match="not a valid JSON Schema"):
        Validator(str(tmp_path / "d2020.json"))  # 2020-12 wants a number for exclusiveMaximum


def test_validator_formats_only_when_asked(accelerate):
    schema = {"type": "string", "format": "ipv4"}
    assert Validator(schema, accelerate=accelerate).check(["nope"]) == []
    assert Validator(schema, check_formats=True, accelerate=accelerate).check(["nope", "10.0.0.1"])[0][0] == 0


def test_validator_unresolvable_ref_is_fatal(accelerate):
    v = Validator({"$ref": "https://example.invalid/nope.json"}, accelerate=accelerate)
    with pytest.raises(FatalError, match="cannot resolve"):
        v.check([1])


def test_validator_unreadable_schema_is_fatal(tmp_path):
    with pytest.raises(FatalError, match="cannot read"):
        Validator(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FatalError, match="is not JSON"):
        Validator(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(FatalError, match="not a JSON Schema"):
        Validator(str(tmp_path / "list.json"))
