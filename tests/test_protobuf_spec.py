"""The protobuf deserializer in specs: its settings checked at their line, ``kpipe test`` cases
that give protobuf values as JSON, and keys through ``key_deserializer``."""
from __future__ import annotations

import base64
import textwrap

from confluent_kafka.serialization import MessageField, SerializationContext

from kit import run_kpipe
from kpipe.runtime.stages import Stages
from kpipe.spec import SpecError, load_spec
from kpipe.transforms.testing import FakeMessage
from protokit import PROTOS
from schema_registry import schema_registry  # noqa: F401 (a fixture)
from test_protobuf import Order, Refund, order, serializer


def spec_problems(tmp_path, deserializer: str) -> list:
    path = tmp_path / "spec.yaml"
    path.write_text("name: p\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"
                    "deserializer:\n" + deserializer)
    try:
        load_spec(str(path), env={})
    except SpecError as err:
        return [str(p).replace(f"{tmp_path}/", "") for p in err.problems]
    return []


def test_config_errors_point_at_their_line(tmp_path):
    found = spec_problems(tmp_path, "  type: protobuf\n")
    assert found == ["spec.yaml:5:3: deserializer: set exactly one of 'registry' or 'descriptor_set' or 'proto'"], found
    found = spec_problems(tmp_path, "  type: protobuf\n  proto: o.proto\n")
    assert found == ["spec.yaml:5:3: deserializer: 'message' is a dependency of 'proto'"], found
    found = spec_problems(tmp_path, "  type: protobuf\n  descriptor_set: o.pb\n  message: 'shop v1'\n")
    assert found == ["spec.yaml:7:12: deserializer.message: expected a message's full name, such as "
                     "shop.v1.Order, got 'shop v1'"], found
    found = spec_problems(tmp_path, "  type: protobuf\n  registry: {url: http://sr}\n  message: a.B\n")
    assert found == ["spec.yaml:7:12: deserializer.message: expected no 'message' with a registry (the wire "
                     "header's message indexes name it), got 'a.B'"], found
    found = spec_problems(tmp_path, "  type: protobuf\n  registry: {url: sr:8081}\n")
    assert found == ["spec.yaml:6:19: deserializer.registry.url: expected an http:// or https:// URL of the "
                     "Schema Registry, got 'sr:8081'"], found
    found = spec_problems(tmp_path, "  type: protobuf\n  descriptor_set: x.pb\n  message: a.B\n"
                                    "  including_default_values: 1\n")
    assert found == ["spec.yaml:8:29: deserializer.including_default_values: 1 is not of type 'boolean'"], found


NOT_AN_ORDER = base64.b64encode(b"\x0a\xff").decode()


def test_kpipe_test_cases_give_protobuf_values_as_json(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: pb-cases
        source: {{brokers: "127.0.0.1:1", topic: orders}}
        deserializer: {{type: protobuf, proto: {PROTOS}/shop/v1/order.proto, import_path: {PROTOS},
                        message: shop.v1.Order}}
        sink: {{type: files, path: ./out}}
        tests:
          - name: the JSON mapping, decoded as a raw value would be
            input:
              json: {{orderId: "9007199254740993", createdAt: "2026-11-26T12:00:00Z", status: STATUS_SHIPPED,
                     coupon: SAVE, signature: AAE=, lines: [{{sku: a, quantity: 2}}], cardToken: t}}
            expect:
              value: {{order_id: 9007199254740993, customer: "", status: STATUS_SHIPPED,
                      created_at: "2026-11-26T12:00:00+00:00", coupon: SAVE, signature: AAE=,
                      lines: [{{sku: a, quantity: 2, price: null}}], labels: {{}}, discount: null, big: 0,
                      tags: [], card_token: t}}
          - name: bytes that are no Order
            input: {{raw_base64: {NOT_AN_ORDER}}}
            expect: {{error: {{stage: deserialize, message: not a shop.v1.Order}}}}
          - name: a field the message lacks
            input: {{json: {{nope: 1}}}}
            expect: {{dropped: true}}
        """))
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PASS  the JSON mapping, decoded as a raw value would be", proc.stdout
    assert lines[1] == "PASS  bytes that are no Order", proc.stdout
    assert "FAIL  a field the message lacks" in proc.stdout
    assert "input.json is not a shop.v1.Order in protobuf's JSON mapping" in proc.stdout
    assert proc.stdout.strip().endswith("2 passed, 1 failed")


def test_keys_through_key_deserializer(tmp_path, schema_registry):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: keyed
        source: {{brokers: "127.0.0.1:1", topic: orders}}
        deserializer: {{type: protobuf, registry: {{url: "{schema_registry.url}"}}}}
        key_deserializer: {{type: protobuf, registry: {{url: "{schema_registry.url}"}}}}
        sink: {{type: files, path: ./out}}
        """))
    stages = Stages(load_spec(str(path), env={}))
    keys = serializer(schema_registry, Refund)
    values = serializer(schema_registry, Order)
    kctx, ctx = SerializationContext("orders", MessageField.KEY), SerializationContext("orders", MessageField.VALUE)
    msgs = [FakeMessage(value=values(order(i)[0], ctx), key=keys(Refund(order_id=i), kctx), offset=i)
            for i in range(3)]
    msgs.append(FakeMessage(value=values(order(3)[0], ctx), key=b"\x00\x00\x00\x00\x63\x00", offset=3))
    msgs.append(FakeMessage(value=values(order(4)[0], ctx), key=None, offset=4))
    out = stages.process("orders", 0, msgs, [m.value() for m in msgs])
    assert out.values == [order(i)[1] for i in (0, 1, 2, 4)]
    assert [k and k["order_id"] for k in out.keys] == [0, 1, 2, None]
    ((index, stage, err),) = out.rejected
    assert index == 3 and stage == "deserialize" and "schema id 99 is not in the schema registry" in str(err)
