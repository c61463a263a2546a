"""The deserializers, one list of raw values at a time; the Schema
Registry ones against the test registry in ``schema_registry.py`` over real HTTP."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from uuid import UUID

import orjson
import pytest
from fastavro import parse_schema

from kit import ROOT
from kpipe.api import BadRecordError, FatalError, RetryableError
from kpipe.deserializers.avro import AvroDeserializer
from kpipe.deserializers.basic import BytesDeserializer, JsonDeserializer, StringDeserializer
from kpipe.plugins import registry
from schema_registry import SchemaRegistry, encode_wire, schema_registry  # noqa: F401 (a fixture)

ORDER_AVSC = ROOT / "schemas" / "order.avsc"
ORDER_SCHEMA = json.loads(ORDER_AVSC.read_text())
PARSED = parse_schema(ORDER_SCHEMA)
UTC = dt.timezone.utc


def order(i: int) -> dict:
    return {"order_id": i, "customer": f"customer-{i}", "country": "DE", "amount": i / 4,
            "created_at": dt.datetime(2026, 11, 26, 12, 0, i % 60, 123000, tzinfo=UTC)}


def plain(value, parsed=PARSED) -> bytes:
    """Schemaless Avro: the datum alone."""
    return encode_wire(0, parsed, value)[5:]


def bad_at(deserializer, raw) -> BadRecordError:
    with pytest.raises(BadRecordError) as info:
        deserializer.deserialize(raw)
    return info.value


# -- json, string, bytes ---------------------------------------------------------------------


def test_json_decodes_and_keeps_tombstones():
    raw = [orjson.dumps({"a": 1}), None, b"[1,2]", b'"x"', b"null"]
    assert JsonDeserializer({}).deserialize(raw) == [{"a": 1}, None, [1, 2], "x", None]


@pytest.mark.parametrize("bad", [b"{not json", b"", b'{"a": 1} trailing', b"\xff", b'"\xff"', b"NaN",
                                 b"1e400", b'"\\ud800"', b"[" * 100_000 + b"]" * 100_000],
                         ids=["syntax", "empty", "trailing", "not-utf8", "not-utf8-in-string", "nan",
                              "too-big-float", "lone-surrogate", "too-deep"])
def test_json_bad_value_is_a_bad_record_at_its_index(bad):
    raw = [b"1", None, b"2", bad, b"3"]
    err = bad_at(JsonDeserializer({}), raw)
    assert err.index == 3 and "invalid JSON" in str(err)


def test_json_keeps_big_integers_exact():
    big = 2**64 + 1
    assert JsonDeserializer({}).deserialize([b"%d" % big, b'{"id": -%d}' % big]) == [big, {"id": -big}]


def test_string_decodes_utf8_and_flags_the_first_bad_value():
    d = StringDeserializer({})
    assert d.deserialize([b"caf\xc3\xa9", None, b""]) == ["café", None, ""]
    err = bad_at(d, [b"ok", b"fine", b"caf\xe9", b"\xff"])
    assert err.index == 2 and "invalid UTF-8" in str(err)


def test_bytes_are_untouched():
    raw = [b"\x00\xff", None, b""]
    assert BytesDeserializer({}).deserialize(raw) == raw


# -- keys: every deserializer maps a missing key to None ----------------------------------------


@pytest.mark.parametrize("make, key", [
    (lambda: JsonDeserializer({}), b'"k"'),
    (lambda: StringDeserializer({}), b"k"),
    (lambda: BytesDeserializer({}), b"k"),
    (lambda: AvroDeserializer({"schema": str(ORDER_AVSC)}), plain(order(1))),
], ids=["json", "string", "bytes", "avro"])
def test_a_missing_key_stays_none(make, key):
    d = make()
    assert d.deserialize([None, None]) == [None, None]
    out = d.deserialize([None, key, None])
    assert out[0] is None and out[2] is None and out[1] is not None
    assert d.deserialize([]) == []


def test_every_installed_deserializer_is_registered():
    assert {"json", "string", "bytes", "avro"} <= set(registry().names("deserializer"))


# -- avro with a local .avsc ---------------------------------------------------------------


def test_avro_file_decodes_records_with_logical_types():
    d = AvroDeserializer({"schema": str(ORDER_AVSC)})
    values = [order(i) for i in range(50)]
    out = d.deserialize([plain(v) for v in values[:25]] + [None] + [plain(v) for v in values[25:]])
    assert out == values[:25] + [None] + values[25:]
    assert out[3]["created_at"] == dt.datetime(2026, 11, 26, 12, 0, 3, 123000, tzinfo=UTC)
    assert d.schema() == ORDER_SCHEMA and "__fastavro_parsed" not in d.schema()


def test_avro_relative_schema_path_resolves_against_the_spec_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "o.avsc").write_text(ORDER_AVSC.read_text())
    d = AvroDeserializer({"schema": "schemas/o.avsc"}, spec_file=str(tmp_path / "spec.yaml"))
    assert d.deserialize([plain(order(2))]) == [order(2)]


@pytest.mark.parametrize("mangle, expect", [
    (lambda b: b[:-3], "needs more bytes"),        # truncated
    (lambda b: b + b"\x00\x01", "2 bytes left over"),  # trailing bytes
    (lambda b: b"", "needs more bytes"),            # empty, not a tombstone
], ids=["truncated", "trailing", "empty"])
@pytest.mark.parametrize("position", [0, 7, 19])
def test_avro_bad_value_is_a_bad_record_at_its_index(mangle, expect, position):
    raw = [plain(order(i)) for i in range(20)]
    raw[position] = mangle(raw[position])
    raw.insert(0, None)
    err = bad_at(AvroDeserializer({"schema": str(ORDER_AVSC)}), raw)
    assert err.index == position + 1 and expect in str(err), str(err)


def test_avro_invalid_utf8_and_union_index_are_bad_records(tmp_path):
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "s", "type": "string"}, {"name": "u", "type": ["null", "long"]}]}
    (tmp_path / "r.avsc").write_text(json.dumps(schema))
    d = AvroDeserializer({"schema": str(tmp_path / "r.avsc")})
    good = plain({"s": "ok", "u": 1}, parse_schema(schema))
    bad_utf8 = b"\x04\xff\xfe\x00"  # a 2-byte string that is not UTF-8, then null
    bad_union = b"\x04ok\x0a"        # union branch 5 of 2
    err = bad_at(d, [good, good, bad_utf8, good])
    assert err.index == 2 and "UnicodeDecodeError" in str(err), str(err)
    err = bad_at(d, [good, good, bad_union, good])
    assert err.index == 2 and "IndexError" in str(err), str(err)


def test_avro_reader_schema_evolves_values(tmp_path):
    v2 = dict(ORDER_SCHEMA, fields=[f for f in ORDER_SCHEMA["fields"] if f["name"] != "customer"]
              + [{"name": "channel", "type": "string", "default": "web"}])
    (tmp_path / "v2.avsc").write_text(json.dumps(v2))
    d = AvroDeserializer({"schema": str(ORDER_AVSC), "reader_schema": str(tmp_path / "v2.avsc")})
    out = d.deserialize([plain(order(1)), None])
    expected = {k: v for k, v in order(1).items() if k != "customer"} | {"channel": "web"}
    assert out == [expected, None]
    assert d.schema() == v2


def test_avro_value_the_reader_schema_cannot_take_is_a_bad_record(tmp_path):
    reader = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"] + [{"name": "vip", "type": "boolean"}])
    (tmp_path / "r.avsc").write_text(json.dumps(reader))  # a new field without a default
    d = AvroDeserializer({"schema": str(ORDER_AVSC), "reader_schema": str(tmp_path / "r.avsc")})
    err = bad_at(d, [None, plain(order(1))])
    assert err.index == 1 and "cannot be resolved to reader_schema" in str(err) and "vip" in str(err)


def test_avro_logical_types_come_back_as_python_types(tmp_path):
    schema = {"type": "record", "name": "L", "fields": [
        {"name": "d", "type": {"type": "int", "logicalType": "date"}},
        {"name": "m", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}]}
    (tmp_path / "l.avsc").write_text(json.dumps(schema))
    value = {"d": dt.date(2026, 11, 26), "m": Decimal("12.34"), "u": UUID(int=7)}
    out = AvroDeserializer({"schema": str(tmp_path / "l.avsc")}).deserialize([plain(value, parse_schema(schema))])
    assert out == [value]


@pytest.mark.parametrize("content, expect", [
    (None, "cannot read"),
    ("{nope", "is not JSON"),
    ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}', "not a valid Avro schema"),
])
def test_avro_unusable_schema_file_is_fatal(tmp_path, content, expect):
    path = tmp_path / "s.avsc"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FatalError, match=expect):
        AvroDeserializer({"schema": str(path)})


# -- avro with a Schema Registry -------------------------------------------------------------


def registry_deserializer(reg: SchemaRegistry, **extra) -> AvroDeserializer:
    return AvroDeserializer({"registry": {"url": reg.url, "timeout": "2s", **extra}})


def test_registry_fetches_each_schema_id_once(schema_registry):
    v1 = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    v2_schema = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"] + [
        {"name": "channel", "type": "string", "default": "web"}])
    v2 = schema_registry.encoder("orders-value", v2_schema)
    d = registry_deserializer(schema_registry)
    assert d.schema() is None  # nothing decoded yet
    first = [v1(order(i)) for i in range(100)] + [None] + [v2(order(i) | {"channel": "app"}) for i in range(100)]
    out = d.deserialize(first)
    assert out[:100] == [order(i) for i in range(100)] and out[100] is None
    assert out[101:] == [order(i) | {"channel": "app"} for i in range(100)]
    assert d.schema() == v2_schema  # the most recent id seen
    out = d.deserialize([v2(order(1) | {"channel": "x"}), v1(order(2))] * 50)
    assert out[-1] == order(2) and d.schema() == ORDER_SCHEMA
    assert schema_registry.fetches(1) == 1 and schema_registry.fetches(2) == 1
    assert [p for m, p in schema_registry.requests if m == "GET"] == ["/schemas/ids/1", "/schemas/ids/2"]


def test_registry_unknown_id_is_a_bad_record_and_is_not_asked_again(schema_registry):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    d = registry_deserializer(schema_registry)
    unknown = encode_wire(42, PARSED, order(3))
    err = bad_at(d, [enc(order(1)), None, unknown, enc(order(2))])
    assert err.index == 2 and "schema id 42" in str(err) and "not found" in str(err).lower()
    assert bad_at(d, [unknown]).index == 0
    assert schema_registry.fetches(42) == 1  # the 404 is remembered for a while
    assert d.deserialize([enc(order(2))]) == [order(2)]


@pytest.mark.parametrize("value, expect", [
    (b"{\"order_id\": 1}", "magic byte 0x7b"),
    (b"\x00\x00\x00", "shorter than its 5-byte header"),
    (b"", "0 bytes"),
])
def test_registry_not_wire_format_is_a_bad_record(schema_registry, value, expect):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    err = bad_at(registry_deserializer(schema_registry), [enc(order(1)), enc(order(2)), value])
    assert err.index == 2 and expect in str(err)


def test_registry_truncated_datum_is_a_bad_record(schema_registry):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    raw = [enc(order(i)) for i in range(5)]
    raw[3] = raw[3][:-4]
    err = bad_at(registry_deserializer(schema_registry), raw)
    assert err.index == 3 and "schema id 1" in str(err)


def test_registry_down_is_retryable_never_a_bad_record(schema_registry):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    raw = [enc(order(1))]
    schema_registry.stop()
    d = AvroDeserializer({"registry": {"url": schema_registry.url.replace("//", "//bob:s3cret@"),
                                       "timeout": 2}})
    with pytest.raises(RetryableError) as info:
        d.deserialize(raw)
    assert schema_registry.url in str(info.value)
    assert "s3cret" not in str(info.value) and "bob" not in str(info.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_registry_server_errors_are_retryable_then_recover(schema_registry, status):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    d = registry_deserializer(schema_registry)
    schema_registry.fail = [status]
    with pytest.raises(RetryableError, match=f"HTTP {status}"):
        d.deserialize([enc(order(1))])
    assert d.deserialize([enc(order(1))]) == [order(1)]  # the runner's retry succeeds


def test_registry_basic_auth():
    with SchemaRegistry(username="sr-user", password="pa55word") as reg:
        enc = reg.encoder("orders-value", ORDER_SCHEMA)
        good = registry_deserializer(reg, username="sr-user", password="pa55word")
        assert good.deserialize([enc(order(1))]) == [order(1)]
        for auth in ({"username": "sr-user", "password": "wrong-pa55"}, {}):
            d = registry_deserializer(reg, **auth)
            with pytest.raises(FatalError) as info:
                d.deserialize([enc(order(1))])
            msg = str(info.value)
            assert reg.url in msg and "HTTP 401" in msg and "registry.username" in msg, msg
            assert "pa55" not in msg
        # basic_auth as Confluent's clients take it (basic.auth.user.info): USER:PASSWORD
        assert registry_deserializer(reg, basic_auth="sr-user:pa55word").deserialize([enc(order(3))]) == [order(3)]
        with pytest.raises(FatalError, match="HTTP 401") as info:
            registry_deserializer(reg, basic_auth="sr-user:pa55").deserialize([enc(order(3))])
        assert "pa55" not in str(info.value)
        # credentials in the URL work too, and are not printed either
        d = AvroDeserializer({"registry": {"url": reg.url.replace("//", "//sr-user:pa55word@")}})
        assert d.deserialize([enc(order(2))]) == [order(2)]
        assert d.registry.display_url == reg.url


def test_registry_not_a_registry_is_fatal(schema_registry):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    d = AvroDeserializer({"registry": {"url": schema_registry.url + "/not/the/base"}})
    with pytest.raises(FatalError, match="base URL"):
        d.deserialize([enc(order(1))])


def test_registry_schema_references_and_non_avro_schemas(schema_registry):
    money = {"type": "record", "name": "Money", "namespace": "kpipe.example",
             "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": "string"}]}
    schema_registry.register("money", money)
    priced = {"type": "record", "name": "Priced", "namespace": "kpipe.example",
              "fields": [{"name": "id", "type": "long"}, {"name": "price", "type": "kpipe.example.Money"}]}
    pid = schema_registry.register("priced-value", priced,
                                   references=[{"name": "kpipe.example.Money", "subject": "money", "version": 1}])
    named: dict = {}
    parse_schema(money, named)
    value = {"id": 1, "price": {"units": 250, "currency": "EUR"}}
    d = registry_deserializer(schema_registry)
    assert d.deserialize([encode_wire(pid, parse_schema(priced, named), value)]) == [value]
    jid = schema_registry.register("j", '{"type": "object"}', schema_type="JSON")
    err = bad_at(d, [encode_wire(pid, parse_schema(priced, named), value), b"\x00" + jid.to_bytes(4, "big") + b"{}"])
    assert err.index == 1 and "JSON schema, not Avro" in str(err)


def test_registry_with_reader_schema(schema_registry, tmp_path):
    enc = schema_registry.encoder("orders-value", ORDER_SCHEMA)
    reader = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"][:2])
    (tmp_path / "r.avsc").write_text(json.dumps(reader))
    d = AvroDeserializer({"registry": {"url": schema_registry.url}, "reader_schema": str(tmp_path / "r.avsc")})
    assert d.deserialize([enc(order(5))]) == [{"order_id": 5, "customer": "customer-5"}]
    assert d.schema() == reader


# -- the config as `kpipe validate` sees it --------------------------------------------------


def spec_problems(tmp_path, deserializer: str, env: dict | None = None):
    from kpipe.spec import SpecError, load_spec

    path = tmp_path / "spec.yaml"
    path.write_text("name: p\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"
                    "deserializer:\n" + deserializer)
    try:
        return load_spec(str(path), env=env or {})
    except SpecError as err:
        return [str(p).split(": ", 1)[1] for p in err.problems]


def test_avro_config_errors_point_at_the_spec(tmp_path):
    assert spec_problems(tmp_path, "  type: avro\n  schema: a.avsc\n  registry: {url: http://sr:8081}\n") == [
        "deserializer.registry: set exactly one of 'schema' or 'registry', not both"]
    assert spec_problems(tmp_path, "  type: avro\n") == ["deserializer: set exactly one of 'schema' or 'registry'"]
    assert spec_problems(tmp_path, "  type: avro\n  registry: {url: sr:8081}\n") == [
        "deserializer.registry.url: expected an http:// or https:// URL of the Schema Registry, got 'sr:8081'"]
    found = spec_problems(tmp_path, "  type: avro\n  registry: {url: http://sr, username: u, timeout: soon}\n")
    assert any("registry.timeout: expected a duration" in p for p in found), found
    assert any("'password' is a dependency of 'username'" in p for p in found), found
    found = spec_problems(tmp_path, "  type: avro\n  registry: {url: http://sr, basic_auth: u:p, username: u,"
                                    " password: p}\n")
    assert found and all("registry" in p for p in found), found
    found = spec_problems(tmp_path, "  type: avro\n  registry: {url: http://sr, basic_auth: no-colon}\n")
    assert any("registry.basic_auth: expected USER:PASSWORD" in p for p in found), found
    assert all("no-colon" not in p for p in found), found  # a secret is never echoed
    # `validate` is the runner's own key, for every deserializer: checked here for the file.
    assert spec_problems(tmp_path, "  type: bytes\n  validate: s.json\n") == [
        f"deserializer.validate: no such file: {tmp_path / 's.json'}"]


def test_avro_registry_credentials_come_from_the_environment(tmp_path):
    (tmp_path / "order.schema.json").write_text("{}")
    spec = spec_problems(tmp_path, "  type: avro\n  registry:\n    url: https://sr:8081\n"
                                   "    username: ${SR_USER}\n    password: ${SR_PASSWORD}\n"
                                   "  validate: order.schema.json\n",
                         env={"SR_USER": "svc", "SR_PASSWORD": "pw"})
    assert spec.deserializer_type == "avro"
    assert spec.deserializer_config == {"registry": {"url": "https://sr:8081", "username": "svc", "password": "pw"}}
    assert spec.validate_schema == str(tmp_path / "order.schema.json")  # the runner's stage, not the plugin's
