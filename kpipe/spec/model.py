"""The validated, normalized spec the runtime reads."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from kpipe.redact import secret_name, url_password
from kpipe.plugins import PluginLoadError, registry

from .schema import schema_default
from .units import parse_duration, parse_size
from kpipe.validation import resolve_path
from .yamlnodes import Document

# ``deserializer.validate: registry``: the schemas come from the deserializer's registry, not a file.
REGISTRY = "registry"

# The record stages an error policy names (``errors.<stage>``), in the order records pass them.
STAGES = ("deserialize", "validate", "transform", "sink")

__all__ = ["Spec", "build_spec", "collect_secrets", "sink_defaults", "SINK_DEFAULT_SECTIONS"]

# The pipeline sections a sink plugin may give defaults for (``SinkPlugin.defaults``).
SINK_DEFAULT_SECTIONS = ("batch", "retry")


@dataclass(frozen=True)
class Spec:
    """A pipeline spec with every default applied. Values are plain Python data."""

    file: str
    name: str
    group: str
    brokers: str
    topics: list[str]
    start: str
    options: dict[str, Any]
    deserializer_type: str
    deserializer_config: dict[str, Any]
    transforms: list  # [(name, settings)] in order
    sink_type: str
    sink_config: dict[str, Any]
    max_records: int
    max_bytes: int
    max_age: float
    max_buffered_bytes: int = 64 << 20     # batch.max_buffered_bytes: records held, decoded size estimated
    retry_attempts: int = 8
    retry_initial_backoff: float = 0.5
    retry_max_backoff: float = 30.0
    retry_max_elapsed: float = 120.0       # retry until both the attempts and this are spent
    retry_attempt_timeout: float | None = None  # one attempt unanswered this long is a stall (None: derived)
    connect_timeout: float = 30.0          # source.connect_timeout: reaching the brokers at start
    assignment_timeout: float = 60.0       # source.assignment_timeout: in the group with no assignment
    key_deserializer_type: str | None = None
    key_deserializer_config: dict[str, Any] = field(default_factory=dict)
    validate_schema: str | None = None     # absolute path of deserializer.validate
    validate_registry: bool = False        # deserializer.validate: registry (each value's registry schema)
    tombstones: str = "skip"
    policies: dict[str, str] = field(default_factory=dict)  # stage -> fail | skip | dlq
    dlq: dict[str, Any] | None = None      # {topic, brokers, options}
    tests: list = field(default_factory=list)
    secrets: frozenset = frozenset()       # values never to print (kpipe.redact)
    warnings: tuple = ()                   # Problem(severity="warning"): printed, never fatal
    sink_defaults: Mapping = field(default_factory=dict)  # {"batch.max_age": "5m"}: the sink's, applied
    _positions: Mapping = field(default_factory=dict, repr=False, compare=False)

    def locate(self, path: tuple) -> tuple[int, int]:
        """1-based (line, col) of the value at ``path`` such as ``("sink", "path")``.

        A path the file does not spell out (a default) resolves to its nearest written
        ancestor, so a runtime error can always point somewhere in the spec.
        """
        path = tuple(path)
        while path:
            if path in self._positions:
                return self._positions[path]
            path = path[:-1]
        return (1, 1)

    def where(self, path: tuple) -> str:
        """``FILE:LINE:COL`` of the value at ``path``, for messages that point back at the spec."""
        line, col = self.locate(path)
        return f"{self.file}:{line}:{col}"


def _with_defaults(kind: str, name: str, config: dict, spec_file: str = "") -> dict:
    """``config`` plus the ``default`` of each top-level property the plugin schema declares.

    A property marked ``"x-path": true`` is a file path: a relative one is made absolute
    against the spec file's directory, so a spec means the same from any working directory.
    """
    plugin = registry().get(kind, name)
    properties = plugin.config_schema.get("properties", {}) if plugin is not None else {}
    filled = dict(config)
    for key, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        if key not in filled and "default" in prop:
            filled[key] = prop["default"]
        if prop.get("x-path") and isinstance(filled.get(key), str) and spec_file:
            filled[key] = os.path.abspath(resolve_path(filled[key], spec_file))
    return filled


def _schema_secrets(schema, value, out: set, key: str = "") -> None:
    """Add to ``out`` what ``schema`` marks ``"x-secret": true`` in ``value``, at any depth:
    for a key named like a URL (``url``, ``*_uri``) the URL's password alone, the rest of a
    URL being no secret; for any other key the whole value."""
    if not isinstance(schema, Mapping):
        return
    if schema.get("x-secret") and isinstance(value, str):
        if key.lower().endswith(("url", "uri")) or "://" in value:
            password = url_password(value)
            if password is not None:
                out.add(password)
        else:
            out.add(value)
    if isinstance(value, Mapping):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                _schema_secrets(sub, value[name], out, name)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _schema_secrets(schema["items"], item, out, key)


def collect_secrets(doc: Document) -> frozenset:
    """Every value of the spec that must never be printed (see ``kpipe.redact``)."""
    data = doc.data if isinstance(doc.data, Mapping) else {}
    out = set(doc.secrets)
    reg = registry()
    for key, kind in (("sink", "sink"), ("deserializer", "deserializer"), ("key_deserializer", "deserializer")):
        section = data.get(key)
        if isinstance(section, Mapping) and isinstance(section.get("type"), str):
            try:
                plugin = reg.get(kind, section["type"])
            except PluginLoadError:  # reported at its spec line; its schema is unknown
                plugin = None
            if plugin is not None:
                _schema_secrets(plugin.config_schema, section, out)
            else:  # no schema to say which settings are secret: go by name and by URL password
                out.update(str(v) for k, v in section.items()
                           if isinstance(v, str) and (secret_name(str(k)) or url_password(v)))
    source = data.get("source") if isinstance(data.get("source"), Mapping) else {}
    dlq = (data.get("errors") or {}).get("dlq") if isinstance(data.get("errors"), Mapping) else None
    for options in (source.get("options"), dlq.get("options") if isinstance(dlq, Mapping) else None):
        if isinstance(options, Mapping):  # librdkafka: sasl.password, ssl.key.password, ...client.secret
            out.update(str(v) for k, v in options.items() if secret_name(str(k)) and v is not None)
    for value in list(out):
        password = url_password(value)
        if password is not None:
            out.add(password)
    return frozenset(v for v in out if v)


def sink_defaults(data: Mapping) -> dict:
    """``{(section, key): value}`` of the sink plugin's ``defaults`` that the spec leaves unset."""
    sink = data.get("sink")
    try:
        plugin = registry().get("sink", sink["type"]) if isinstance(sink, Mapping) else None
    except PluginLoadError:  # reported at its spec line
        plugin = None
    out = {}
    for section, keys in (getattr(plugin, "defaults", None) or {}).items():
        written = data.get(section)
        for key, value in (keys or {}).items():
            if not (isinstance(written, Mapping) and key in written):
                out[(section, key)] = value
    return out


def build_spec(doc: Document) -> Spec:
    """Normalize a document that passed validation (see ``validate_document``)."""
    data = doc.data
    source = data["source"]
    applied = sink_defaults(data)
    batch = {**{k: v for (s, k), v in applied.items() if s == "batch"}, **data.get("batch", schema_default("batch"))}
    retry = {**{k: v for (s, k), v in applied.items() if s == "retry"}, **data.get("retry", schema_default("retry"))}
    deserializer = data.get("deserializer", schema_default("deserializer"))
    sink = data["sink"]
    errors = data.get("errors", {})
    default_policy = errors.get("default", schema_default("errors", "default"))
    key_deserializer = data.get("key_deserializer")
    positions = dict(doc.values)
    if "topic" in source:
        topics = [source["topic"]]
        # Runtime errors about source.topics[0] point at the `topic:` line.
        positions[("source", "topics")] = positions[("source", "topic")]
        positions[("source", "topics", 0)] = positions[("source", "topic")]
    else:
        topics = list(source["topics"])
    return Spec(
        file=doc.file,
        name=data["name"],
        group=source.get("group", data["name"]),
        brokers=source["brokers"],
        topics=topics,
        start=source.get("start", schema_default("source", "start")),
        options=dict(source.get("options", {})),
        deserializer_type=deserializer["type"],
        deserializer_config=_with_defaults(
            "deserializer", deserializer["type"],
            {k: v for k, v in deserializer.items() if k not in ("type", "validate")}, doc.file),
        key_deserializer_type=key_deserializer["type"] if key_deserializer else None,
        key_deserializer_config=_with_defaults(
            "deserializer", key_deserializer["type"],
            {k: v for k, v in key_deserializer.items() if k != "type"}, doc.file) if key_deserializer else {},
        validate_schema=(os.path.abspath(resolve_path(deserializer["validate"], doc.file))
                         if deserializer.get("validate") not in (None, "", REGISTRY) else None),
        validate_registry=deserializer.get("validate") == REGISTRY,
        transforms=[next(iter(item.items())) for item in data.get("transforms", [])],
        tombstones=data.get("tombstones", schema_default("tombstones")),
        policies={stage: errors.get(stage, default_policy)
                  for stage in STAGES},
        dlq=({"brokers": source["brokers"], "options": {}, **errors["dlq"]} if "dlq" in errors else None),
        tests=list(data.get("tests", [])),
        secrets=collect_secrets(doc),
        sink_type=sink["type"],
        sink_config=_with_defaults("sink", sink["type"], {k: v for k, v in sink.items() if k != "type"},
                                   doc.file),
        max_records=int(batch.get("max_records", schema_default("batch", "max_records"))),
        max_bytes=parse_size(batch.get("max_bytes", schema_default("batch", "max_bytes"))),
        max_age=parse_duration(batch.get("max_age", schema_default("batch", "max_age"))),
        max_buffered_bytes=parse_size(batch.get("max_buffered_bytes", schema_default("batch", "max_buffered_bytes"))),
        retry_attempts=int(retry.get("max_attempts", schema_default("retry", "max_attempts"))),
        retry_initial_backoff=parse_duration(retry.get("initial_backoff", schema_default("retry", "initial_backoff"))),
        retry_max_backoff=parse_duration(retry.get("max_backoff", schema_default("retry", "max_backoff"))),
        retry_max_elapsed=parse_duration(retry.get("max_elapsed", schema_default("retry", "max_elapsed"))),
        retry_attempt_timeout=parse_duration(retry["attempt_timeout"]) if "attempt_timeout" in retry else None,
        connect_timeout=parse_duration(source.get("connect_timeout", schema_default("source", "connect_timeout"))),
        assignment_timeout=parse_duration(source.get("assignment_timeout",
                                                     schema_default("source", "assignment_timeout"))),
        sink_defaults={f"{s}.{k}": v for (s, k), v in applied.items()},
        _positions=positions,
    )
