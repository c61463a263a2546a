"""The built-in transforms, created through the registry like a spec would, and the case runner."""
from __future__ import annotations

import copy
import hashlib
import hmac
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from kpipe.api import DROP, BadRecordError, FatalError, Metadata
from kpipe.deserializers.basic import JsonDeserializer
from kpipe.expressions import ExpressionSyntaxError, compile as compile_expr
from kpipe.plugins import registry
from kpipe.transforms import ConfigError
from kpipe.transforms.testing import FakeMessage, run_cases, same

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = ["select", "drop", "rename", "set", "cast", "flatten", "filter", "parse_timestamp",
            "mask", "hash", "python"]


@pytest.fixture(autouse=True, scope="module")
def examples_importable():
    sys.path.insert(0, str(ROOT))
    yield
    sys.path.remove(str(ROOT))


def make(name, config):
    return registry().get("transform", name).create(config)


def meta_for(n, topic="orders", partition=3, **kw):
    messages = [FakeMessage(None, kw.get("key", b"k%d" % i), kw.get("headers"), 1_700_000_000_000 + i,
                            100 + i, topic, partition) for i in range(n)]
    return Metadata(topic, partition, messages)


def run(name, config, values):
    return make(name, config).apply(values, meta_for(len(values)))


def bad(name, config, values) -> BadRecordError:
    with pytest.raises(BadRecordError) as info:
        run(name, config, values)
    return info.value


# --- registry and schemas --------------------------------------------------------------------

def test_every_builtin_is_registered_with_a_valid_schema():
    reg = registry()
    assert set(BUILTINS) <= set(reg.names("transform"))
    for name in BUILTINS:
        plugin = reg.get("transform", name)
        assert plugin.name == name
        Draft202012Validator.check_schema(plugin.config_schema)
        assert plugin.description


def test_expression_transforms_name_their_extra(monkeypatch):
    assert registry().get("transform", "filter").extra == "cel"
    assert registry().get("transform", "set").extra == "cel"
    monkeypatch.setitem(sys.modules, "cel", None)  # as if kpipe[cel] were not installed
    monkeypatch.delitem(sys.modules, "kpipe.expressions", raising=False)
    monkeypatch.delitem(sys.modules, "kpipe.transforms.expr", raising=False)
    with pytest.raises(FatalError, match=r'needs cel.*pip install "kpipe\[cel\]"'):
        make("filter", "a > 1")
    assert run("select", ["a"], [{"a": 1, "b": 2}]) == [{"a": 1}]  # the others do not need it


@pytest.mark.parametrize("name,config", [
    ("select", ["a", "n.x"]), ("drop", ["a", "n.x"]), ("rename", {"a": "z", "n.x": "nx"}),
    ("set", {"n.y": "a + 1"}), ("cast", {"a": "string", "n.x": "float"}), ("flatten", {}),
    ("filter", "a > 0"), ("parse_timestamp", {"field": "t", "format": "epoch_ms"}),
    ("mask", ["a", "n.x"]), ("hash", {"fields": ["a", "n.x"]}),
    ("python", "examples.transforms_sample:add_vat"),
])
def test_transforms_never_change_their_input(name, config):
    values = [{"a": 1, "n": {"x": 2}, "t": 1_700_000_000_000, "net": 10.0}, None]
    before = copy.deepcopy(values)
    out = make(name, config).apply(values, meta_for(2))
    assert values == before
    assert len(out) == 2 and out[1] is None  # a tombstone passes through every built-in


@pytest.mark.parametrize("name,config", [
    ("select", ["a"]), ("drop", ["a"]), ("rename", {"a": "b"}), ("set", {"b": "1"}),
    ("cast", {"a": "int"}), ("flatten", {}), ("parse_timestamp", {"field": "a"}),
    ("mask", ["a"]), ("hash", {"fields": ["a"]}),
])
def test_field_transforms_refuse_values_that_are_not_objects(name, config):
    error = bad(name, config, [{"a": None}, "just text"])
    assert error.index == 1
    assert f"{name}: expected an object, got str" in str(error)


# --- select, drop, rename ---------------------------------------------------------------------

def test_select_keeps_listed_fields_in_listed_order_and_omits_missing_ones():
    out = run("select", ["c", "a", "nope"], [{"a": 1, "b": 2, "c": 3}])
    assert out == [{"c": 3, "a": 1}] and list(out[0]) == ["c", "a"]


def test_select_dotted_paths():
    value = {"id": 1, "user": {"name": "ann", "email": "a@x", "address": {"city": "Bonn", "zip": "1"}},
             "other": 5}
    out = run("select", ["id", "user.name", "user.address.city", "missing.deep"], [value])
    assert out == [{"id": 1, "user": {"name": "ann", "address": {"city": "Bonn"}}}]


def test_select_whole_field_wins_over_a_path_inside_it():
    value = {"user": {"name": "ann", "email": "a@x"}}
    assert run("select", ["user.name", "user"], [value]) == [value]
    assert run("select", ["user", "user.name"], [value]) == [value]


def test_select_skips_a_path_through_something_that_is_not_an_object():
    assert run("select", ["a.b"], [{"a": 5}, {"a": None}]) == [{}, {}]


def test_drop_flat_and_nested():
    value = {"a": 1, "b": 2, "n": {"x": 1, "y": 2}}
    assert run("drop", ["b", "zz"], [value]) == [{"a": 1, "n": {"x": 1, "y": 2}}]
    assert run("drop", ["n.x", "n.q", "q.r"], [value]) == [{"a": 1, "b": 2, "n": {"y": 2}}]


def test_drop_hands_back_the_same_object_when_nothing_is_dropped():
    value = {"a": 1}
    assert run("drop", ["b"], [value])[0] is value


def test_rename_keeps_position_and_swaps():
    out = run("rename", {"b": "beta", "x": "y"}, [{"a": 1, "b": 2, "c": 3}])
    assert list(out[0].items()) == [("a", 1), ("beta", 2), ("c", 3)]
    assert run("rename", {"a": "b", "b": "a"}, [{"a": 1, "b": 2}]) == [{"b": 1, "a": 2}]


def test_rename_onto_an_existing_field_replaces_it_only_when_the_source_is_there():
    t = {"old": "new"}
    assert run("rename", t, [{"new": 0, "old": 1}]) == [{"new": 1}]
    assert run("rename", t, [{"new": 0}]) == [{"new": 0}]


def test_rename_moves_values_between_levels():
    out = run("rename", {"user.name": "user_name", "id": "meta.id"}, [{"id": 7, "user": {"name": "ann", "x": 1}}])
    assert out == [{"user": {"x": 1}, "user_name": "ann", "meta": {"id": 7}}]


def test_rename_into_a_field_that_is_not_an_object_is_a_bad_record():
    error = bad("rename", {"a": "b.c"}, [{"a": 1}, {"a": 1, "b": 5}])
    assert error.index == 1 and "cannot write 'b.c'" in str(error)


def test_rename_two_fields_to_one_name_is_a_config_error():
    with pytest.raises(ConfigError, match="both renamed"):
        make("rename", {"a": "x", "b": "x"})


def test_an_empty_path_segment_is_a_config_error():
    with pytest.raises(ConfigError, match="segment is empty") as info:
        make("select", ["ok", "a..b"])
    assert info.value.path == (1,)


def test_escaped_dot_is_part_of_a_field_name():
    assert run("select", ["a\\.b"], [{"a.b": 1, "a": {"b": 2}}]) == [{"a.b": 1}]


# --- set and filter ----------------------------------------------------------------------------

def test_set_evaluates_every_expression_against_the_input():
    out = run("set", {"total": "amount * qty", "big": "amount > 100", "amount": "amount + 1"},
              [{"amount": 150, "qty": 2}])
    assert out == [{"amount": 151, "qty": 2, "total": 300, "big": True}]


def test_set_dotted_target_creates_objects():
    assert run("set", {"a.b.c": "1"}, [{"a": {"x": 0}}]) == [{"a": {"x": 0, "b": {"c": 1}}}]
    error = bad("set", {"a.b": "1"}, [{"a": {}}, {"a": 3}])
    assert error.index == 1 and "cannot write 'a.b'" in str(error)


def test_set_reads_metadata_and_the_whole_value():
    t = make("set", {"t": "_meta.topic", "p": "_meta.partition", "o": "_meta.offset",
                     "k": "string(_meta.key)", "ts": "_meta.timestamp", "src": "_meta.headers.source",
                     "n": "size(_value)"})
    meta = meta_for(2, headers=[("source", b"web")])
    out = t.apply([{"x": 1}, {"x": 2}], meta)
    assert out[1] == {"x": 2, "t": "orders", "p": 3, "o": 101, "k": "k1", "ts": 1_700_000_000_001,
                      "src": b"web", "n": 1}


def test_set_expression_error_is_a_bad_record_at_its_index():
    error = bad("set", {"total": "amount * qty"}, [{"amount": 1, "qty": 2}, {"amount": 1}])
    assert error.index == 1
    assert "set: field 'total' (amount * qty): no field 'qty' in the record" in str(error)
    error = bad("set", {"total": "amount * 1.5"}, [{"amount": 1}])
    assert "no such overload" in str(error) and "double(" in str(error)


def test_filter_keeps_true_drops_false_and_stays_aligned():
    values = [{"amount": 250, "country": "DE"}, {"amount": 5, "country": "DE"}, None,
              {"amount": 101, "country": "FR"}, {"amount": 101, "country": "DE"}]
    out = run("filter", 'amount > 100 && country == "DE"', values)
    assert out == [values[0], DROP, None, DROP, values[4]]
    assert out[0] is values[0]


def test_filter_missing_field_is_a_bad_record_at_its_index():
    error = bad("filter", "amount > 100", [{"amount": 1}, {"amount": 200}, {"id": 3}])
    assert error.index == 2 and "no field 'amount'" in str(error)


def test_filter_with_has_tolerates_missing_fields():
    out = run("filter", "has(_value.amount) && _value.amount > 100", [{"id": 1}, {"amount": 200}])
    assert out == [DROP, {"amount": 200}]


def test_filter_result_must_be_a_bool():
    error = bad("filter", "amount", [{"amount": True}, {"amount": 1}])
    assert error.index == 1 and "not true or false" in str(error)


def test_filter_on_text_values_uses_value():
    assert run("filter", '_value.startsWith("ERROR")', ["ERROR x", "INFO y"]) == ["ERROR x", DROP]


def test_filter_on_metadata():
    t = make("filter", '_meta.offset % 2 == 0 && _meta.key == b"k2"')
    assert t.apply([{}, {}, {}], meta_for(3)) == [DROP, DROP, {}]


def test_cel_extension_functions_are_available():
    assert run("set", {"n": "name.lowerAscii()", "r": "math.round(1.5)"}, [{"name": "ANN"}]) == \
        [{"name": "ANN", "n": "ann", "r": 2.0}]


# --- expressions -------------------------------------------------------------------------------

def test_syntax_error_is_a_value_error_with_a_column():
    with pytest.raises(ValueError) as info:
        compile_expr("amount >")
    exc = info.value
    assert isinstance(exc, ExpressionSyntaxError)
    assert (exc.line, exc.column, exc.offset) == (1, 9, 8)
    assert "syntax error at column 9 of 'amount >'" in str(exc)


def test_syntax_error_on_a_later_line_has_its_offset():
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_expr("a > 1 &&\n  b >")
    assert (info.value.line, info.value.column) == (2, 6)
    assert info.value.offset == len("a > 1 &&\n") + 5


def test_transform_config_error_carries_path_and_offset():
    with pytest.raises(ConfigError) as info:
        make("set", {"ok": "1", "total": "amount *"})
    assert info.value.path == ("total",) and info.value.offset == 8
    with pytest.raises(ConfigError) as info:
        make("filter", "a ==")
    assert info.value.path == () and info.value.offset == 4


def test_unknown_meta_member_is_caught_at_compile_time():
    with pytest.raises(ExpressionSyntaxError, match="_meta has no 'keys'"):
        compile_expr("_meta.keys == 1")
    compile_expr('"_meta.keys" == _meta.topic')  # inside a string it is just text


def test_context_holds_only_what_the_expression_uses():
    e = compile_expr("a + _meta.offset")
    ctx = e.context({"a": 1, "b": 2}, meta_for(1), 0)
    assert ctx == {"a": 1, "_meta_offset": 100}  # _meta.offset is read as a plain variable
    assert e.run(ctx) == 101


def test_meta_used_as_a_whole_map_and_inside_strings():
    e = compile_expr('_meta["topic"] + "/" + _meta.topic + "/_meta.key"')
    ctx = e.context({}, meta_for(1), 0)
    assert ctx["_meta"]["topic"] == "orders" and e.run(ctx) == "orders/orders/_meta.key"
    e = compile_expr('_meta.topic + "_meta.key" + \'_meta.offset\'')
    assert e.evaluate({}, meta_for(1), 0) == "orders_meta.key_meta.offset"


@pytest.mark.parametrize("source,value,want", [
    ("amount", {"amount": 3}, 3), (" _meta.topic ", {}, "orders"), ("_meta.offset", {}, 100),
    ("true", {"true": 1}, True), ("_value", {"a": 1}, {"a": 1}),
])
def test_plain_field_and_meta_reads_skip_cel_with_the_same_result(source, value, want):
    e = compile_expr(source)
    assert same(e.evaluate(value, meta_for(1), 0), want)
    assert same(e.run(e.context(value, meta_for(1), 0)), want)


def test_a_plain_field_read_of_a_missing_field_is_an_expression_error():
    from kpipe.expressions import ExpressionError
    with pytest.raises(ExpressionError, match="no field 'amount'"):
        compile_expr("amount").evaluate({"x": 1}, meta_for(1), 0)


# --- cast -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("to,given,want", [
    ("int", "42", 42), ("int", " -7 ", -7), ("int", 3.0, 3), ("int", True, 1), ("int", 5, 5),
    ("float", "2.5", 2.5), ("float", 2, 2.0), ("float", "1e3", 1000.0), ("float", ".5", 0.5),
    ("bool", "true", True), ("bool", "No", False), ("bool", 1, True), ("bool", 0.0, False),
    ("string", 42, "42"), ("string", 2.5, "2.5"), ("string", True, "true"), ("string", b"hi", "hi"),
    ("string", {"a": [1]}, '{"a":[1]}'), ("int32", "2147483647", 2147483647), ("boolean", "t", True),
    ("float64", "3", 3.0),
])
def test_cast_converts(to, given, want):
    out = run("cast", {"f": to}, [{"f": given}])[0]["f"]
    assert same(out, want), (out, want)


@pytest.mark.parametrize("to,given", [
    ("int", "abc"), ("int", 2.5), ("int", "1_000"), ("int", "12.0"), ("int", [1]), ("int", float("nan")),
    ("float", "nan"), ("float", "inf"), ("float", "x"), ("bool", "maybe"), ("bool", 2),
    ("int8", 128), ("int16", -32769), ("string", b"\xff"),
])
def test_cast_refuses_lossy_or_impossible_conversions(to, given):
    error = bad("cast", {"f": to}, [{"f": "1" if to != "string" else "ok"}, {"f": given}])
    assert error.index == 1
    assert "cast: field 'f': cannot cast" in str(error) and f"to {to}" in str(error)


def test_cast_leaves_null_and_missing_fields_alone_and_reaches_nested_fields():
    out = run("cast", {"a": "int", "b": "int", "n.x": "string"}, [{"a": None, "n": {"x": 1, "y": 2}}])
    assert out == [{"a": None, "n": {"x": "1", "y": 2}}]


def test_cast_overlapping_paths_are_a_config_error():
    with pytest.raises(ConfigError, match="cast:"):
        make("cast", {"a": "string", "a.b": "int"})


# --- flatten --------------------------------------------------------------------------------------

def test_flatten_default_separator_and_lists_kept():
    value = {"id": 1, "user": {"name": "ann", "geo": {"lat": 1.5}}, "tags": ["a", "b"], "empty": {}}
    assert run("flatten", {}, [value]) == [{"id": 1, "user_name": "ann", "user_geo_lat": 1.5,
                                           "tags": ["a", "b"], "empty": {}}]
    assert run("flatten", None, [value])[0]["user_geo_lat"] == 1.5


def test_flatten_separator_and_indexed_arrays():
    value = {"a": {"b": 1}, "items": [{"sku": "x"}, 7]}
    assert run("flatten", {"separator": ".", "arrays": "index"}, [value]) == \
        [{"a.b": 1, "items.0.sku": "x", "items.1": 7}]


def test_flatten_collision_is_a_bad_record():
    error = bad("flatten", {}, [{"a": 1}, {"a_b": 1, "a": {"b": 2}}])
    assert error.index == 1 and "two fields flatten to 'a_b'" in str(error)


# --- parse_timestamp ---------------------------------------------------------------------------

@pytest.mark.parametrize("config,given,want", [
    ({"format": "iso8601", "to": "epoch_ms"}, "2023-11-14T22:13:20.123Z", 1_700_000_000_123),
    ({"format": "iso8601", "to": "epoch_s"}, "2023-11-14T23:13:20+01:00", 1_700_000_000),
    ({"format": "epoch_ms", "to": "iso8601"}, 1_700_000_000_123, "2023-11-14T22:13:20.123000Z"),
    ({"format": "epoch_s", "to": "iso8601"}, 1_700_000_000, "2023-11-14T22:13:20Z"),
    ({"format": "epoch_s", "to": "epoch_ms"}, "1700000000", 1_700_000_000_000),
    ({"format": "epoch_ms", "to": "epoch_ms"}, 1_700_000_000_123, 1_700_000_000_123),
    ({"format": "epoch_us", "to": "epoch_ms"}, 1_700_000_000_123_999, 1_700_000_000_123),
    ({"format": "%Y-%m-%d %H:%M:%S", "timezone": "Europe/Berlin", "to": "iso8601"},
     "2023-11-14 23:13:20", "2023-11-14T22:13:20Z"),
    ({"format": "epoch_ms", "to": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"}, 1_700_000_000_000,
     "14.11.2023 23:13"),
    ({"format": "iso8601", "to": "datetime"}, "2023-11-14T22:13:20",
     datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)),
])
def test_parse_timestamp_converts(config, given, want):
    assert run("parse_timestamp", {"field": "t", **config}, [{"t": given}]) == [{"t": want}]


def test_parse_timestamp_target_null_and_missing():
    config = {"field": "t", "format": "epoch_s", "to": "iso8601", "target": "when.iso"}
    out = run("parse_timestamp", config, [{"t": 0}, {"t": None}, {"x": 1}])
    assert out == [{"t": 0, "when": {"iso": "1970-01-01T00:00:00Z"}}, {"t": None, "when": {"iso": None}}, {"x": 1}]


def test_parse_timestamp_unparsable_value_is_a_bad_record():
    error = bad("parse_timestamp", {"field": "t"}, [{"t": "2023-01-01"}, {"t": "yesterday"}])
    assert error.index == 1 and "field 't': cannot parse 'yesterday' as iso8601" in str(error)
    assert bad("parse_timestamp", {"field": "t", "format": "epoch_ms"}, [{"t": True}]).index == 0


@pytest.mark.parametrize("config,path", [
    ({"field": "t", "format": "yyyy-MM-dd"}, ("format",)), ({"field": "t", "to": "unix"}, ("to",)),
    ({"field": "t", "timezone": "Mars/Olympus"}, ("timezone",)),
])
def test_parse_timestamp_config_errors(config, path):
    with pytest.raises(ConfigError) as info:
        make("parse_timestamp", config)
    assert info.value.path == path


# --- mask and hash ------------------------------------------------------------------------------

def test_mask_default_and_replacement():
    assert run("mask", ["card", "x.y"], [{"card": "4111", "x": {"y": 1}, "z": None}]) == \
        [{"card": "****", "x": {"y": "****"}, "z": None}]
    assert run("mask", {"fields": ["card", "gone"], "replacement": None}, [{"card": "4111", "n": None}]) == \
        [{"card": None, "n": None}]


def test_hash_plain_and_salted():
    plain = run("hash", {"fields": ["email", "n", "missing"]}, [{"email": "a@x", "n": 42, "nul": None}])[0]
    assert plain == {"email": hashlib.sha256(b"a@x").hexdigest(), "n": hashlib.sha256(b"42").hexdigest(),
                     "nul": None}
    salted = run("hash", {"fields": ["email"], "algorithm": "sha512", "salt": "pepper"}, [{"email": "a@x"}])
    assert salted == [{"email": hmac.new(b"pepper", b"a@x", "sha512").hexdigest()}]


def test_hash_objects_hash_as_sorted_json():
    a = run("hash", {"fields": ["o"]}, [{"o": {"b": 1, "a": 2}}, {"o": {"a": 2, "b": 1}}])
    assert a[0] == a[1] == {"o": hashlib.sha256(b'{"a":2,"b":1}').hexdigest()}


def test_hash_empty_salt_is_a_config_error():
    with pytest.raises(ConfigError, match="salt is empty"):
        make("hash", {"fields": ["a"], "salt": ""})


# --- python -----------------------------------------------------------------------------------------

def test_python_record_function():
    assert run("python", "examples.transforms_sample:add_vat", [{"net": 100}]) == [{"net": 100, "gross": 119.0}]


def test_python_record_function_with_meta_and_drop():
    t = make("python", {"function": "examples.transforms_sample:route_by_header"})
    meta = Metadata("orders", 3, [FakeMessage(headers=[("source", b"web")], offset=7, topic="orders", partition=3),
                                  FakeMessage(headers=[("source", b"app")], offset=8)])
    assert t.apply([{"a": 1}, {"a": 2}], meta) == [{"a": 1, "origin": "orders[3]@7"}, DROP]


def test_python_record_exception_becomes_a_bad_record_naming_it():
    error = bad("python", "examples.transforms_sample:add_vat", [{"net": 1}, {"net": 2}, {"gross": 3}])
    assert error.index == 2
    assert str(error) == "python examples.transforms_sample:add_vat: KeyError: 'net'"


def test_python_record_function_returning_none_is_a_bad_record():
    error = bad("python", "tests.test_transforms:forgets_to_return", [None, {"a": 1}])
    assert error.index == 1 and "returned None" in str(error)


def forgets_to_return(value):
    if value is not None:
        value.get("a")


def test_python_batch_function():
    t = make("python", {"function": "examples.transforms_sample:dedupe_lines", "batch": True})
    values = [{"line_id": 1}, {"line_id": 2}, {"line_id": 1}]
    assert t.apply(values, meta_for(3)) == [values[0], values[1], DROP]
    with pytest.raises(BadRecordError) as info:
        t.apply([{"line_id": 1}, {}], meta_for(2))
    assert info.value.index == 1


def test_python_batch_function_breaking_the_contract_is_fatal():
    t = make("python", {"function": "tests.test_transforms:returns_too_few", "batch": True})
    with pytest.raises(FatalError, match="returned 1 items for 2 values"):
        t.apply([{}, {}], meta_for(2))
    t = make("python", {"function": "tests.test_transforms:raises_plainly", "batch": True})
    with pytest.raises(FatalError, match="raised ZeroDivisionError"):
        t.apply([{}], meta_for(1))


def returns_too_few(values, meta):
    return values[:1]


def raises_plainly(values, meta):
    return [1 / 0]


@pytest.mark.parametrize("target,message", [
    ("examples.nope:f", "cannot import 'examples.nope'"),
    ("examples.transforms_sample:nope", "has no 'nope'"),
    ("examples.transforms_sample:__doc__", "not a function"),
    ("tests.test_transforms:BUILTINS", "not a function"),
])
def test_python_load_errors_are_config_errors(target, message):
    with pytest.raises(ConfigError, match=message):
        make("python", target)


# --- the case runner --------------------------------------------------------------------------------

def test_run_cases_reports_pass_fail_and_a_diff():
    results = run_cases(
        [{"filter": "amount > 100"}, {"cast": {"amount": "float"}}],
        [{"name": "kept", "input": {"value": {"amount": 250}}, "expect": {"value": {"amount": 250.0}}},
         {"name": "int is not float", "input": {"value": {"amount": 250}}, "expect": {"value": {"amount": 250}}},
         {"name": "dropped", "input": {"value": {"amount": 5}}, "expect": {"dropped": True}},
         {"input": {"value": {}}, "expect": {"error": {"stage": "transform", "message": "no field 'amount'"}}},
         {"name": "wrong error", "input": {"value": {}}, "expect": {"error": {"message": "something else"}}}])
    assert [(r.name, r.ok) for r in results] == [
        ("kept", True), ("int is not float", False), ("dropped", True), ("case 4", True), ("wrong error", False)]
    assert results[3].error.startswith("filter (amount > 100)")
    assert "-{'value': {'amount': 250}}" in results[1].diff() and results[0].diff() == ""


def test_run_cases_feeds_metadata_and_raw_input():
    results = run_cases(
        [{"set": {"k": "_meta.key", "h": "_meta.headers.a", "t": "_meta.timestamp", "topic": "_meta.topic"}}],
        [{"input": {"raw": '{"x": 1}', "key": "k1", "headers": {"a": "b"}, "timestamp": 5},
          "expect": {"value": {"x": 1, "k": b"k1", "h": b"b", "t": 5, "topic": "orders"}}},
         {"input": {"raw": "{nope"}, "expect": {"error": {"stage": "deserialize", "message": "invalid JSON"}}},
         {"input": {"value": {}, "key": {"id": 1}}, "expect": {"value": {"k": {"id": 1}, "h": None, "t": None,
                                                                     "topic": "orders"}}}],
        topic="orders", deserializer=JsonDeserializer({}))
    assert [r.ok for r in results] == [True, True, False]
    assert "no such key" in results[2].error.lower()


def test_run_cases_rejects_bad_transforms_and_cases():
    with pytest.raises(ConfigError) as info:
        run_cases([{"filter": "a > 1"}, {"cast": {"a": "integer"}}], [])
    assert info.value.path[:3] == ("transforms", 1, "cast")
    with pytest.raises(ConfigError, match="unknown transform 'selekt'"):
        run_cases([{"selekt": ["a"]}], [])
    with pytest.raises(ConfigError) as info:
        run_cases([], [{"input": {"value": 1}, "expect": {"valeu": 1}}])
    assert info.value.path[:2] == ("tests", 0)
    with pytest.raises(ConfigError) as info:
        run_cases([{"set": {"a": "1 +"}}], [])
    assert info.value.path == ("transforms", 0, "set", "a") and info.value.offset == 3


def test_same_tells_numbers_apart():
    assert same({"a": [1, 2.0]}, {"a": (1, 2.0)})
    assert not same(1, 1.0) and not same(1, True) and not same({"a": 1}, {"a": 1, "b": 2})
