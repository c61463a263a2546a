"""Declared types come from the Avro schema first, then the spec's JSON Schema (issue 15 item 1)."""
from __future__ import annotations

import json

from kit import ROOT
from kpipe.formats.dataset import declared
from kpipe.runtime.stages import Stages
from kpipe.spec import load_spec

ORDER_AVSC = ROOT / "schemas" / "order.avsc"


def test_avro_schema_wins_over_validate(tmp_path):
    # The JSON Schema says amount is text; the Avro schema, which the values follow, says double.
    (tmp_path / "order.schema.json").write_text(json.dumps(
        {"type": "object", "properties": {"order_id": {"type": "integer"}, "amount": {"type": "string"}}}))
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: p\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"
                    f"deserializer:\n  type: avro\n  schema: {ORDER_AVSC}\n  validate: order.schema.json\n")
    stages = Stages(load_spec(str(spec), env={}))
    assert stages.value_schema() == json.loads(ORDER_AVSC.read_text())
    assert declared(stages.value_schema(), {})["amount"] == "double"
