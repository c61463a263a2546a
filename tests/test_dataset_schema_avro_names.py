"""Avro named types in the dataset schema resolve by the spec's fullname rules (issue 15 item 1).

A named type (record, enum, fixed) is known by its fullname: a dotted name as it is, else its own
``namespace``, else the enclosing one's; an unqualified reference means the enclosing namespace.
Each schema is checked as written (what a deserializer hands the sink) and as fastavro parses it,
and fastavro parsing it first proves the references are valid Avro."""
from __future__ import annotations

import pytest
from fastavro import parse_schema

from kpipe.formats.dataset import declared

MONEY = {"struct": {"cents": "bigint", "currency": "text"}}


def money(**naming):
    return {"type": "record", **naming, "fields": [
        {"name": "cents", "type": "long"},
        {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}}]}


def order(namespace, fields):
    return {"type": "record", "name": "Order", **({"namespace": namespace} if namespace else {}), "fields": fields}


CASES = {
    # defined by its full name, used by its short name inside the same namespace
    "full name, short use": order("shop", [{"name": "price", "type": money(name="shop.Money")},
                                           {"name": "tax", "type": "Money"},
                                           {"name": "code", "type": "Currency"}]),
    # defined with a namespace attribute, used by its full name from another namespace
    "namespace attribute, full use": order("web", [{"name": "price", "type": money(name="Money", namespace="shop")},
                                                   {"name": "tax", "type": ["null", "shop.Money"]},
                                                   {"name": "code", "type": "shop.Currency"}]),
    # namespace inherited from the enclosing record, used by short and full name
    "inherited namespace": order("shop", [{"name": "price", "type": money(name="Money")},
                                          {"name": "tax", "type": "shop.Money"},
                                          {"name": "code", "type": "shop.Currency"}]),
    # a full name in the enclosing record's name gives the namespace
    "namespace from a dotted record name": {"type": "record", "name": "shop.Order", "fields": [
        {"name": "price", "type": money(name="Money")}, {"name": "tax", "type": ["Money", "null"]},
        {"name": "code", "type": "Currency"}]},
}


@pytest.mark.parametrize("parsed", [False, True], ids=["as written", "fastavro parsed"])
@pytest.mark.parametrize("case", list(CASES))
def test_named_types_resolve_by_fullname(case, parsed):
    schema = parse_schema(CASES[case])  # raises on a reference Avro cannot resolve
    got = declared(schema if parsed else CASES[case], {})
    assert got == {"price": MONEY, "tax": MONEY, "code": "text"}


def test_one_short_name_in_two_namespaces_is_two_types():
    schema = order("a", [
        {"name": "x", "type": {"type": "fixed", "name": "Id", "size": 16}},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "namespace": "b", "fields": [
            {"name": "id", "type": {"type": "enum", "name": "Id", "symbols": ["P"]}},
            {"name": "again", "type": "Id"},     # b.Id, the enclosing namespace's
            {"name": "outer", "type": "a.Id"}]}},
        {"name": "y", "type": "Id"},            # a.Id
        {"name": "z", "type": "b.Id"}])
    for form in (schema, parse_schema(schema)):
        assert declared(form, {}) == {
            "x": "bytes", "y": "bytes", "z": "text",
            "inner": {"struct": {"id": "text", "again": "text", "outer": "bytes"}}}


def test_a_record_that_contains_itself_by_short_name_is_json_text():
    schema = order("shop", [{"name": "next", "type": ["null", "Order"]}, {"name": "n", "type": "long"}])
    for form in (schema, parse_schema(schema)):
        assert declared(form, {}) == {"next": "json", "n": "bigint"}
