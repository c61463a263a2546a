"""Checks a parsed spec: the envelope schema, each plugin's config schema, then lints.

Every jsonschema error becomes a ``Problem`` at the YAML node it is about: unknown keys at
the key itself, missing keys at the enclosing mapping, bad values at the value.
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, Iterable

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from kpipe.api import KpipeError
from kpipe.plugins import PluginLoadError, registry
from kpipe.safe_read import regular_file_problem
from kpipe.validation import json_problem, resolve_path

from .model import REGISTRY
from .problems import Problem, format_path
from .schema import cached_schema
from .units import parse_size
from .yamlnodes import Document

__all__ = ["validate_document", "did_you_mean"]

# Keywords whose errors are about keys, not about the value at the error's path.
_KEY_KEYWORDS = {"required", "additionalProperties", "propertyNames", "dependentRequired",
                 "minProperties", "maxProperties"}

_KPIPE_OWNS = {
    "enable.auto.commit": "kpipe commits offsets itself, only after the sink write is durable; remove this option",
    "enable.auto.offset.store": "kpipe commits offsets itself, only after the sink write is durable; remove this option",
    "group.id": "set the consumer group with source.group, not in options",
    "bootstrap.servers": "set the brokers with source.brokers, not in options",
}


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    # 0.7, not difflib's 0.6: at 0.6 an unrelated key like 'extra' was "corrected" to 'retry'.
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_document(doc: Document) -> list[Problem]:
    """Every problem with ``doc`` beyond YAML syntax, plus those found while parsing it."""
    found: list[Problem] = list(doc.problems)
    checker = _Checker(doc, found)
    checker.check(cached_schema(), doc.data, ())
    checker.check_plugin("deserializer", ("deserializer",), own={"validate"})
    checker.check_plugin("deserializer", ("key_deserializer",))
    checker.check_plugin("sink", ("sink",))
    checker.check_sink_defaults()
    checker.check_transforms()
    _lint(doc, checker)
    return found


class _Checker:
    def __init__(self, doc: Document, out: list):
        self.doc = doc
        self.out = out

    def report(self, pos: tuple, path: tuple, message: str, severity: str = "error") -> None:
        if not self.doc.is_tainted(path):  # an unset variable already explains this value
            self.out.append(Problem(self.doc.file, pos[0], pos[1], format_path(path), message, severity))

    def check(self, schema: dict, instance: Any, prefix: tuple) -> None:
        for error in Draft202012Validator(schema).iter_errors(instance):
            self._translate(error, prefix)

    def check_plugin(self, kind: str, at: tuple, own: set = frozenset()) -> None:
        """Look up ``<at>.type`` in the registry and validate the rest of the mapping (less
        the keys kpipe itself reads, ``own``) with the plugin's ``config_schema``."""
        section = self.doc.data.get(at[0])
        type_path = at + ("type",)
        if not isinstance(section, dict) or not isinstance(section.get("type"), str) \
                or self.doc.is_tainted(type_path):
            return
        plugin = self._plugin(kind, section["type"], type_path)
        if plugin is not None:
            config = {k: v for k, v in section.items() if k != "type" and k not in own}
            self.check(dict(plugin.config_schema), config, at)

    def check_sink_defaults(self) -> None:
        """The sink plugin's ``defaults`` must be settings of the sections a sink may default,
        with values the pipeline schema accepts; a bad one is the plugin's fault, reported at
        ``sink.type`` since the spec has no line for it."""
        from .model import SINK_DEFAULT_SECTIONS, sink_defaults

        section = self.doc.data.get("sink")
        if not isinstance(section, dict) or self.doc.is_tainted(("sink", "type")):
            return
        for (name, key), value in sink_defaults(self.doc.data).items():
            props = cached_schema()["properties"].get(name, {}).get("properties", {})
            why = None
            if name not in SINK_DEFAULT_SECTIONS or key not in props:
                why = f"a sink may default only {', '.join(s + '.*' for s in SINK_DEFAULT_SECTIONS)} settings"
            else:
                error = best_match(Draft202012Validator(props[key]).iter_errors(value))
                if error is not None:
                    why = f"expected {props[key]['x-expected']}" if "x-expected" in props[key] else error.message
            if why is not None:
                self.report(self.doc.value_at(("sink", "type")), ("sink", "type"),
                            f"the {section['type']!r} sink plugin's default {name}.{key}: {value!r} is invalid ({why})")

    def check_transforms(self) -> None:
        """Each ``- NAME: SETTINGS`` item names a transform plugin; SETTINGS must fit its schema
        and must compile (an expression with a syntax error is reported here, not at run)."""
        items = self.doc.data.get("transforms")
        if not isinstance(items, list):
            return
        for i, item in enumerate(items):
            if not isinstance(item, dict) or len(item) != 1:
                continue  # the envelope schema reported it
            ((name, config),) = item.items()
            path = ("transforms", i, name)
            if self.doc.is_tainted(path):
                continue
            plugin = self._plugin("transform", name, path, at_key=True)
            if plugin is None:
                continue
            before = len(self.out)
            self.check(dict(plugin.config_schema), config, path)
            if len(self.out) > before:
                continue
            try:
                plugin.create(config)
            except (ValueError, TypeError, LookupError) as exc:
                # A transform's ConfigError says where inside its settings, down to the
                # character of an expression; a plain ValueError points at the settings.
                at = path + tuple(getattr(exc, "path", ()))
                offset = getattr(exc, "offset", None)
                pos = self.doc.char_at(at, offset) if offset is not None else self.doc.value_at(at)
                text = str(exc)
                self.report(pos, at, text if text.startswith(f"{name}:") else f"{name}: {text}")
            except KpipeError as exc:  # e.g. a missing extra, with its pip hint
                self.report(self.doc.value_at(path), path, str(exc))

    def _plugin(self, kind: str, name: str, path: tuple, at_key: bool = False):
        where = self.doc.key_at(path) if at_key else self.doc.value_at(path)
        try:
            reg = registry()
            plugin = reg.get(kind, name)
        except PluginLoadError as exc:
            self.report(where, path, str(exc))
            return None
        if plugin is None:
            installed = reg.names(kind)
            self.report(where, path, f"unknown {kind} {'' if at_key else 'type '}{name!r}"
                                     f"{did_you_mean(name, installed)} (installed: {', '.join(installed) or 'none'})")
            return None
        try:
            Draft202012Validator.check_schema(plugin.config_schema)
        except SchemaError as exc:
            self.report(where, path, f"{kind} plugin {name!r} has an invalid config schema: {exc.message}")
            return None
        return plugin

    def _translate(self, error: ValidationError, prefix: tuple) -> None:
        path = prefix + tuple(error.absolute_path)
        keyword, instance, schema = error.validator, error.instance, error.schema
        at_value = self.doc.value_at(path)

        if keyword == "additionalProperties" and isinstance(instance, dict):
            allowed = list(schema.get("properties", {}))
            patterns = list(schema.get("patternProperties", {}))
            for key in instance:
                if key not in allowed and not any(re.search(p, key) for p in patterns):
                    self.report(self.doc.key_at(path + (key,)), path + (key,),
                                f"unknown key {key!r}{did_you_mean(key, allowed)}")
        elif keyword == "required" and isinstance(instance, dict):
            # jsonschema yields one error per missing key; SpecError drops the repeats.
            for key in error.validator_value:
                if key not in instance:
                    self.report(at_value, path + (key,), f"missing required key {key!r}")
        elif keyword in ("oneOf", "anyOf") and _only_required(error.validator_value):
            self._exactly_one(error, path)
        elif "x-expected" in schema and keyword not in _KEY_KEYWORDS:
            self.report(at_value, path, f"expected {schema['x-expected']}, got {_show(instance)}")
        elif keyword in ("oneOf", "anyOf") and error.context:
            best = best_match(error.context)
            if best is not None and best is not error:
                self._translate(best, prefix)
            else:
                self.report(at_value, path, f"{_show(instance)} does not match any allowed form")
        elif keyword == "enum":
            choices = error.validator_value
            suggestion = did_you_mean(instance, choices) if isinstance(instance, str) else ""
            self.report(at_value, path, f"{_show(instance)} is not one of {choices!r}{suggestion}")
        elif keyword == "type":
            types = error.validator_value
            names = ", ".join(repr(t) for t in (types if isinstance(types, list) else [types]))
            self.report(at_value, path, f"{_show(instance)} is not of type {names}")
        else:
            self.report(at_value, path, error.message)

    def _exactly_one(self, error: ValidationError, path: tuple) -> None:
        """``oneOf: [{required: [a]}, {required: [b]}]`` means "set exactly one of a or b"."""
        instance = error.instance
        if not isinstance(instance, dict):
            return  # `required` says nothing about non-mappings; the type error covers it
        keys = [k for alt in error.validator_value for k in alt["required"]]
        choice = " or ".join(repr(k) for k in keys)
        present = sorted((k for k in keys if k in instance), key=lambda k: self.doc.key_at(path + (k,)))
        if len(present) > 1:
            extra = path + (present[1],)
            self.report(self.doc.key_at(extra), extra, f"set exactly one of {choice}, not both")
        elif not present:
            self.report(self.doc.value_at(path), path, f"set exactly one of {choice}")


def _installed_sink(sink: Any):
    """The sink plugin a ``sink:`` mapping names, or None (missing, unknown or broken: the
    plugin check has reported that already)."""
    if not isinstance(sink, dict) or not isinstance(sink.get("type"), str):
        return None
    try:
        return registry().get("sink", sink["type"])
    except PluginLoadError:
        return None


def _lint_validate_registry(doc: Document, checker: _Checker, deserializer: dict) -> None:
    """``validate: registry`` takes each value's JSON Schema from the registry that decodes it:
    only ``type: json`` with ``registry`` has one (a file named registry is ``./registry``)."""
    path = ("deserializer", "validate")
    if deserializer.get("type") != "json":
        checker.report(doc.value_at(path), path,
                       f"validate: registry needs type json with a registry (Confluent's JSON Schema), "
                       f"not type {deserializer.get('type')!r}; for a file named registry write ./registry")
    elif not deserializer.get("registry"):
        checker.report(doc.value_at(path), path,
                       "validate: registry needs deserializer.registry (the Schema Registry the JSON "
                       "Schemas come from); for a file named registry write ./registry")


def _lint_raw_values(doc: Document, checker: _Checker, sink_type: str, setting: str) -> None:
    """A sink that parses the values itself (``SinkPlugin.raw_values``) gets their bytes, only
    checked by the deserializer: nothing may stand between the two."""
    data = doc.data
    why = f"sink {sink_type!r} parses the values itself ({setting}), so"
    deserializer = data.get("deserializer")
    if isinstance(deserializer, dict):
        if deserializer.get("type") != "json" or deserializer.get("registry"):
            path = ("deserializer", "type")
            checker.report(doc.value_at(path), path, f"{why} the deserializer must be json without registry "
                                                     f"(the one that can check a value without decoding it)")
        if deserializer.get("validate"):
            path = ("deserializer", "validate")
            checker.report(doc.value_at(path), path, f"{why} there is no decoded value to validate; "
                                                     f"drop validate or {setting}")
    for key, what in (("key_deserializer", "a key_deserializer"), ("transforms", "transforms")):
        if data.get(key):
            checker.report(doc.key_at((key,)), (key,), f"{why} {what} cannot run; drop them or {setting}")


def _lint_plugin_files(doc: Document, checker: _Checker, section: str) -> None:
    """A deserializer's files (``"x-path"`` properties, an ``.avsc``) are read when it starts;
    one that exists but is a FIFO or a device would block or never end that read, and a
    broken ``.avsc`` or ``.json`` would stop the run with no line to point at."""
    config = doc.data.get(section)
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        return
    try:
        plugin = registry().get("deserializer", config["type"])
    except PluginLoadError:
        return
    properties = plugin.config_schema.get("properties", {}) if plugin is not None else {}
    for key, prop in properties.items():
        value, path = config.get(key), (section, key)
        if isinstance(prop, dict) and prop.get("x-path") and isinstance(value, str) and value \
                and not doc.is_tainted(path):
            full = resolve_path(value, doc.file)
            if not os.path.exists(full):
                continue  # the plugin says so when it starts, as before
            if full.endswith((".avsc", ".json")):  # read it as the plugin will: bounded, not too deep
                problem = json_problem(full)
            elif prop.get("x-path") == "directory":  # e.g. protobuf's import_path
                problem = None if os.path.isdir(full) else f"{full} is not a directory"
            else:
                problem = regular_file_problem(full)
                problem = problem and f"cannot read {full}: {problem}"
            if problem:
                checker.report(doc.value_at(path), path, problem)


def _sinks_that(has) -> str:
    reg = registry()
    names = [n for n in reg.names("sink") if has(reg.get("sink", n).capabilities)]
    return ", ".join(names) or "none installed"


def _only_required(alternatives: Any) -> bool:
    return isinstance(alternatives, list) and bool(alternatives) and all(
        isinstance(alt, dict) and set(alt) == {"required"} and len(alt["required"]) == 1
        for alt in alternatives)


def _lint(doc: Document, checker: _Checker) -> None:
    """Rules one schema cannot express: settings kpipe owns, and limits that parse to nothing."""
    data = doc.data
    source = data.get("source")
    options = source.get("options") if isinstance(source, dict) else None
    if isinstance(options, dict):
        for key, value in options.items():
            if key not in _KPIPE_OWNS:
                continue
            if key.startswith("enable.") and (value is False or str(value).strip().lower() == "false"):
                continue  # turning auto-commit off is what kpipe wants anyway
            path = ("source", "options", key)
            checker.report(doc.key_at(path), path, _KPIPE_OWNS[key])

    errors = data.get("errors")
    if isinstance(errors, dict) and not isinstance(errors.get("dlq"), dict):
        for stage, policy in errors.items():
            if policy == "dlq":
                path = ("errors", stage)
                checker.report(doc.value_at(path), path,
                               "policy 'dlq' needs a dead-letter topic: add errors.dlq.topic")

    deserializer = data.get("deserializer")
    schema_file = deserializer.get("validate") if isinstance(deserializer, dict) else None
    if schema_file == REGISTRY and not doc.is_tainted(("deserializer", "validate")):
        _lint_validate_registry(doc, checker, deserializer)
    elif isinstance(schema_file, str) and schema_file and not doc.is_tainted(("deserializer", "validate")):
        full = resolve_path(schema_file, doc.file)
        path = ("deserializer", "validate")
        if not os.path.exists(full):
            checker.report(doc.value_at(path), path, f"no such file: {os.path.abspath(full)}")
        else:  # read now, bounded, so a FIFO, a huge or a too deep file stops here, at its line
            problem = json_problem(full)
            if problem is not None:
                checker.report(doc.value_at(path), path, problem)
    for section in ("deserializer", "key_deserializer"):
        _lint_plugin_files(doc, checker, section)

    sink = data.get("sink")
    sink_plugin = _installed_sink(sink)
    setting = sink_plugin.raw_values({k: v for k, v in sink.items() if k != "type"}) if sink_plugin else ""
    if setting:
        _lint_raw_values(doc, checker, sink["type"], setting)
    if data.get("tombstones") == "delete" and sink_plugin is not None and not sink_plugin.capabilities.deletes:
        path = ("tombstones",)
        checker.report(doc.value_at(path), path,
                       f"sink {sink['type']!r} cannot delete; use 'skip', or a sink that can "
                       f"({_sinks_that(lambda c: c.deletes)})")
    if data.get("delivery") == "exactly-once" and sink_plugin is not None \
            and not sink_plugin.capabilities.exactly_once:
        # A warning, not an error: the run works, only its promise is weaker than asked.
        path = ("delivery",)
        checker.report(doc.value_at(path), path,
                       f"sink {sink['type']!r} declares neither stores_offsets nor idempotent_writes, "
                       f"so a run stopped between its write and the commit writes that batch again "
                       f"(at-least-once); use a sink that declares one ({_sinks_that(lambda c: c.exactly_once)}), "
                       f"or say 'at-least-once'", severity="warning")

    batch = data.get("batch")
    for key in ("max_bytes", "max_buffered_bytes"):
        size = batch.get(key) if isinstance(batch, dict) else None
        if isinstance(size, str):
            try:
                too_small = parse_size(size) < 1
            except ValueError:
                too_small = False  # the schema pattern already reported it
            if too_small:
                path = ("batch", key)
                checker.report(doc.value_at(path), path, f"{size!r} is less than 1 byte")
