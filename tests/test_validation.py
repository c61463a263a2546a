"""JSON Schema validation of decoded values (``kpipe.validation.Validator``)."""
from __future__ import annotations

import json

import pytest

from kit import ROOT
from kpipe.api import BadRecordError, FatalError
from kpipe.validation import Validator

ORDER_JSON_SCHEMA = ROOT / "schemas" / "order.schema.json"


def good_order(i: int) -> dict:
    return {"order_id": i, "customer": "c", "country": "DE", "amount": 1.5,
            "created_at": "2026-11-26T12:00:00Z"}


def test_validator_passes_valid_values_and_skips_tombstones():
    v = Validator(str(ORDER_JSON_SCHEMA))
    values = [good_order(i) for i in range(100)] + [None]
    assert v.check(values) == []
    v.validate(values)
    assert v.schema == json.loads(ORDER_JSON_SCHEMA.read_text())


def test_validator_names_the_json_path_of_each_failure():
    v = Validator(str(ORDER_JSON_SCHEMA))
    values = [good_order(0), good_order(1) | {"amount": "12"}, None, good_order(3),
              {k: x for k, x in good_order(4).items() if k != "country"}]
    assert v.check(values) == [(1, "$.amount: '12' is not of type 'number'"),
                               (4, "$: 'country' is a required property")]
    with pytest.raises(BadRecordError) as info:
        v.validate(values)
    assert info.value.index == 1 and "$.amount" in str(info.value) and "order.schema.json" in str(info.value)


def test_validator_nested_paths_and_schema_dicts():
    v = Validator({"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"sku": {"type": "string"}}}}}})
    assert v.check([{"items": [{"sku": "a"}, {"sku": 7}]}]) == [(0, "$.items[1].sku: 7 is not of type 'string'")]


def test_validator_honors_dollar_schema(tmp_path):
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "maximum": 10, "exclusiveMaximum": True}
    (tmp_path / "d4.json").write_text(json.dumps(draft4))
    v = Validator("d4.json", spec_file=str(tmp_path / "spec.yaml"))
    assert v.check([9, 10]) == [(1, "$: 10 is greater than or equal to the maximum of 10")]
    (tmp_path / "d2020.json").write_text(json.dumps({k: x for k, x in draft4.items() if k != "$schema"}))
    with pytest.raises(FatalError, match="not a valid JSON Schema"):
        Validator(str(tmp_path / "d2020.json"))  # 2020-12 wants a number for exclusiveMaximum


def test_validator_formats_only_when_asked():
    schema = {"type": "string", "format": "ipv4"}
    assert Validator(schema).check(["nope"]) == []
    assert Validator(schema, check_formats=True).check(["nope", "10.0.0.1"])[0][0] == 0


def test_validator_unreadable_schema_is_fatal(tmp_path):
    with pytest.raises(FatalError, match="cannot read"):
        Validator(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FatalError, match="is not JSON"):
        Validator(str(tmp_path / "bad.json"))
