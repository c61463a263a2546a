"""The complete spec schema (envelope plus every installed plugin's config) and the reference
docs rendered from it: what ``kpipe schema`` and ``kpipe docs`` print.

Both are built from the same schemas the validator uses, so they cannot drift from it; the
output is deterministic (plugins sorted by name, no timestamps) so committed docs can be
checked for staleness.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterable, Mapping

from kpipe.plugins import capability_flags, registry
from kpipe.spec.schema import pipeline_schema

__all__ = ["full_schema", "render_docs", "INTERPOLATION_PATTERN", "DOC_FILES"]

#: A string holding a ``${VAR}`` reference. ``kpipe`` substitutes these before validating, but
#: an editor sees the raw text, so the full schema also accepts such a string wherever the
#: value would otherwise have to be a number, a boolean, an enum member or match a pattern.
INTERPOLATION_PATTERN = r"\$\{[^}]*\}"
_INTERPOLATED = {"type": "string", "pattern": INTERPOLATION_PATTERN,
                 "description": "A ${VAR} reference, substituted when kpipe loads the spec."}

_ANNOTATIONS = ("title", "description", "default", "examples", "x-expected", "x-secret", "x-path",
                "deprecated", "readOnly", "writeOnly", "$comment")
_STRUCTURAL = ("properties", "patternProperties", "items", "prefixItems", "required", "propertyNames",
               "minProperties", "maxProperties", "minItems", "maxItems", "uniqueItems")

KINDS = {"sink": "sinks", "deserializer": "deserializers", "transform": "transforms"}
DOC_FILES = ("spec.md",) + tuple(f"{page}.md" for page in KINDS.values())


def _plugins(kind: str, dists: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """(name, descriptor) of every loadable plugin of ``kind``, sorted; ``dists`` keeps only
    the plugins of those distributions."""
    reg = registry()
    keep = None if dists is None else set(dists)
    return [(name, reg.get(kind, name)) for name in reg.names(kind)
            if keep is None or reg.dists[(kind, name)][0] in keep]


# --- kpipe schema -------------------------------------------------------------------------


def _allow_interpolation(node: Any, wrap: bool = True) -> Any:
    """``node`` with every scalar constraint widened to also accept a ``${VAR}`` string.

    Alternatives of a ``oneOf``/``anyOf`` are not widened themselves (a ``${VAR}`` matching two
    of them would fail ``oneOf``); the combinator as a whole is."""
    if not isinstance(node, dict):
        return node
    if _INTERPOLATED in node.get("anyOf", ()):
        return node  # already widened
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {k: _allow_interpolation(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "then", "else") and isinstance(value, dict):
            out[key] = _allow_interpolation(value)
        elif key == "allOf":
            out[key] = [_allow_interpolation(v) for v in value]
        elif key in ("anyOf", "oneOf"):
            out[key] = [_allow_interpolation(v, wrap=False) for v in value]
        else:
            out[key] = value
    if wrap and _needs_widening(out):
        annotations = {k: out.pop(k) for k in _ANNOTATIONS if k in out}
        return {**annotations, "anyOf": [out, _INTERPOLATED]}
    return out


def _needs_widening(node: dict) -> bool:
    """True for a scalar schema that a ``${VAR}`` string would fail."""
    if any(k in node for k in _STRUCTURAL) or "if" in node:
        return False
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if types and not set(types) & {"string", "integer", "number", "boolean", "null"}:
        return False  # an object or array: no single ${VAR} stands for one
    if "string" in types and not any(k in node for k in ("enum", "const", "pattern", "format")):
        return False
    return bool(types) or any(k in node for k in ("enum", "const", "anyOf", "oneOf"))


def _allow_keys(schema: Mapping, keys: Iterable[str]) -> dict:
    """A plugin config schema that also allows ``keys`` (``type``, ``validate``), which the
    spec writes in the same mapping but kpipe strips before the plugin's check."""
    schema = copy.deepcopy(dict(schema))
    if schema.get("additionalProperties", True) is not True or "unevaluatedProperties" in schema:
        props = schema.setdefault("properties", {})
        for key in keys:
            props.setdefault(key, True)
    for combinator in ("oneOf", "anyOf", "allOf"):
        if combinator in schema:
            schema[combinator] = [_allow_keys(alt, keys) if isinstance(alt, dict) else alt
                                  for alt in schema[combinator]]
    return schema


def _dispatch(section: dict, kind: str, own: Mapping[str, Any], dists) -> None:
    """Turn an envelope ``{type: NAME, ...}`` section into type enum + one if/then per plugin."""
    plugins = _plugins(kind, dists)
    type_schema = section["properties"]["type"]
    type_schema.pop("minLength", None)
    type_schema.pop("examples", None)
    type_schema["enum"] = [name for name, _ in plugins]
    branches = []
    for name, plugin in plugins:
        then = _allow_keys(plugin.config_schema, ["type", *own])
        if plugin.description and "description" not in then:
            then["description"] = plugin.description
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                         "then": _allow_interpolation(then)})
    if branches:
        section["allOf"] = branches


def full_schema(dists: Iterable[str] | None = None) -> dict:
    """The envelope with every installed plugin's config schema folded in (draft 2020-12).

    ``dists`` limits the plugins to those distributions (None: all installed)."""
    # Widen the envelope first, so the plugin `type` enums added below stay plain enums.
    schema = _allow_interpolation(pipeline_schema())
    schema["$id"] = "urn:kpipe:schema:pipeline:1:full"
    schema["description"] += (" This schema also includes the config schema of every installed plugin"
                              " (`kpipe schema`); a ${VAR} string is accepted wherever a number, boolean,"
                              " choice or pattern is expected, since kpipe substitutes it before validating.")
    props = schema["properties"]
    _dispatch(props["deserializer"], "deserializer", {"validate": True}, dists)
    _dispatch(props["key_deserializer"], "deserializer", {}, dists)
    _dispatch(props["sink"], "sink", {}, dists)
    items = props["transforms"]["items"]
    items["anyOf"] = [
        {"title": name, "description": plugin.description or f"The {name} transform.",
         "type": "object", "properties": {name: _allow_interpolation(copy.deepcopy(dict(plugin.config_schema)))},
         "required": [name], "additionalProperties": False}
        for name, plugin in _plugins("transform", dists)]
    items.pop("x-expected", None)
    return schema


def schema_json(dists: Iterable[str] | None = None) -> str:
    return json.dumps(full_schema(dists), indent=2, ensure_ascii=False) + "\n"


# --- kpipe docs ---------------------------------------------------------------------------


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return "`" + text.replace("`", "'") + "`"


def _type_of(node: Any) -> str:
    if node is True or node == {}:
        return "any"
    if not isinstance(node, dict):
        return "never"
    if "const" in node:
        return _code(node["const"])
    if "enum" in node:
        return " | ".join(_code(v) for v in node["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            return " or ".join(dict.fromkeys(_type_of(alt) for alt in node[combinator]))
    types = node.get("type")
    if types is None:
        return "object" if "properties" in node else "any"
    types = [types] if isinstance(types, str) else types
    out = []
    for t in types:
        if t == "array" and isinstance(node.get("items"), dict):
            out.append(f"list of {_type_of(node['items'])}")
        elif t == "object" and isinstance(node.get("additionalProperties"), dict):
            out.append(f"map of {_type_of(node['additionalProperties'])}")
        else:
            out.append(t)
    return " or ".join(out)


def _text(text: Any) -> str:
    """Prose for a table cell: one line, pipes escaped, no accidental HTML tags."""
    return _cell(text).replace("<", "&lt;")


def _describe(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    parts = []
    if node.get("title"):
        parts.append(f"**{_text(node['title'])}.**")
    if node.get("description"):
        parts.append(_text(node["description"]))
    for key, what in (("propertyNames", "Keys"), ("items", "Items"), ("additionalProperties", "Values")):
        sub = node.get(key)
        if isinstance(sub, dict) and sub.get("description") and "properties" not in sub:
            parts.append(f"{what}: {_text(sub['description'])}.")
    if node.get("pattern"):
        parts.append(f"Pattern: `{_cell(node['pattern'])}`.")
    if node.get("examples"):
        parts.append("Examples: " + ", ".join(_cell(_code(e)) for e in node["examples"]) + ".")
    if node.get("x-secret"):
        parts.append("Secret: never printed.")
    return " ".join(parts)


def _rows(node: Any, prefix: str, required: bool, out: list) -> None:
    """One table row per key, depth first in schema order; nested keys get dotted names."""
    if not isinstance(node, dict):
        return
    default = _cell(_code(node["default"])) if "default" in node else ""
    out.append(f"| `{prefix}` | {_cell(_type_of(node))} | {'yes' if required else ''} | {default} | "
               f"{_describe(node)} |")
    _children(node, prefix, out)


def _children(node: dict, prefix: str, out: list) -> None:
    req = set(node.get("required", ()))
    for key, sub in node.get("properties", {}).items():
        _rows(sub, f"{prefix}.{key}" if prefix else key, key in req, out)
    items = node.get("items")
    if isinstance(items, dict) and ("properties" in items):
        _children(items, f"{prefix}[]", out)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        _children(extra, f"{prefix}.*", out)


_HEADER = ["| Key | Type | Required | Default | Description |", "|---|---|---|---|---|"]
_GENERATED = ("<!-- Generated by `kpipe docs` from the schemas the validator uses; "
              "do not edit by hand. -->")


def _spec_page() -> str:
    schema = pipeline_schema()
    lines = [_GENERATED, "", f"# {schema['title']}", "", _text(schema["description"]), "",
             "Top-level keys of a pipeline spec. Nested keys are dotted; `[]` marks the items of a "
             "list. `sink`, `deserializer`, `key_deserializer` and each transform take their "
             "plugin's settings as well: see [sinks](sinks.md), [deserializers](deserializers.md) "
             "and [transforms](transforms.md).", ""]
    req = set(schema.get("required", ()))
    for key, sub in schema["properties"].items():
        lines += [f"## `{key}`", ""]
        if sub.get("title") or sub.get("description"):
            lines += [_describe({k: sub[k] for k in ("title", "description") if k in sub}), ""]
        rows: list = []
        _rows(sub, key, key in req, rows)
        lines += _HEADER + rows + [""]
    return "\n".join(lines)


def _plugin_page(kind: str, dists) -> str:
    reg = registry()
    title = KINDS[kind].capitalize()
    lines = [_GENERATED, "", f"# {title}", ""]
    if kind == "transform":
        lines += ["Each item of `transforms:` is a one-key mapping `- NAME: SETTINGS`; SETTINGS has "
                  "the form below.", ""]
    else:
        lines += [f"Set `type:` to the {kind}'s name; the other keys of the mapping are its options.", ""]
    plugins = _plugins(kind, dists)
    lines += [", ".join(f"[`{name}`](#{name.replace('_', '_')})" for name, _ in plugins), ""]
    for name, plugin in plugins:
        schema = dict(plugin.config_schema)
        lines += [f"## {name}", ""]
        desc = plugin.description or schema.get("description", "")
        if desc:
            lines += [_text(desc), ""]
        lines += [f"Distribution: `{reg.dists[(kind, name)][0]}`."]
        extra = getattr(plugin, "extra", "")
        if extra:
            lines[-1] += f" Needs `pip install \"kpipe[{extra}]\"`."
        caps = getattr(plugin, "capabilities", None)
        if caps is not None:
            flags = sorted(capability_flags(caps))
            lines[-1] += f" Capabilities: {', '.join(f'`{f}`' for f in flags) or 'none'}."
        lines.append("")
        lines += _options(schema, name if kind == "transform" else "")
    return "\n".join(lines)


def _options(schema: dict, root: str) -> list[str]:
    """The options table of one config schema (``root``: the transform's name, else "")."""
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives and "properties" not in schema:
        out = []
        for i, alt in enumerate(alternatives, 1):
            out += [f"Form {i} of {len(alternatives)}:", ""] + _options(alt, root)
        return out
    rows: list = []
    if root:
        _rows(schema, root, True, rows)
    else:
        _children(schema, "", rows)
        extra = schema.get("additionalProperties")
        if not rows:
            return ["No options." if extra is False else "Options: " + _cell(_type_of(schema)) + ".", ""]
    out = _HEADER + rows + [""]
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema and all(isinstance(a, dict) and set(a) <= {"required"}
                                        for a in schema[combinator]):
            keys = [" + ".join(f"`{k}`" for k in a.get("required", [])) for a in schema[combinator]]
            out += [f"Set {'exactly' if combinator == 'oneOf' else 'at least'} one of: "
                    f"{', '.join(keys)}.", ""]
    return out


def render_docs(dists: Iterable[str] | None = None) -> dict[str, str]:
    """File name (under docs/reference/) -> Markdown text."""
    dists = None if dists is None else list(dists)
    pages = {"spec.md": _spec_page()}
    for kind, page in KINDS.items():
        pages[f"{page}.md"] = _plugin_page(kind, dists)
    return {name: text.rstrip("\n") + "\n" for name, text in pages.items()}
