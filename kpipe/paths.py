"""Where records go: path templates evaluated per record, and object names from Kafka coordinates.

Kept apart from *what* is written (``kpipe.formats``). Shared by the sinks that write files or
objects.

A path template is literal text with fields in braces, compiled once and then evaluated for
every record from the record's own data:

    {topic} {partition}        the record's topic and partition
    {offset}                   its offset (one object per record: rarely what you want)
    {key}                      its key, as UTF-8 text
    {timestamp:<strftime>}     its Kafka timestamp in UTC, e.g. {timestamp:%Y-%m-%d}; bare
                               {timestamp} is milliseconds since the epoch
    {value.a.b}                a field of the record's value, dotted for nested objects

Never the wall clock: a record lands under the same path however late it is written. A field
that is missing, null, or empty becomes ``__HIVE_DEFAULT_PARTITION__`` (Hive's and Spark's name
for a null partition value). Values are made safe to use as one path segment: every byte outside
``A-Z a-z 0-9 - _ .`` is percent-encoded as UTF-8 (``/`` becomes ``%2F``, so a value can never add
a level or climb out with ``..``), and so is a leading ``.`` or ``_``, which Hive, Spark and Athena
would take for a hidden file.
"""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

import orjson

__all__ = ["NULL_SEGMENT", "PathTemplate", "TemplateError", "object_name", "parse_object_name",
           "connect_name", "parse_connect_name", "Layout"]

NULL_SEGMENT = "__HIVE_DEFAULT_PARTITION__"

_FIELD = re.compile(r"\{([^{}]*)\}")
_VALUE = re.compile(r"^value(\.[^.{}]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# strftime directives and the coarsest bucket (ms) over which each is constant; a format is
# evaluated once per bucket of its finest directive. Anything not listed: once per millisecond.
_DAY, _HOUR, _MINUTE, _SECOND = 86_400_000, 3_600_000, 60_000, 1000
_GRAIN = {**dict.fromkeys("YymdjaAbBhwuUWVGgCeDFxzZ%nt", _DAY), **dict.fromkeys("HIkKlpP", _HOUR),
          **dict.fromkeys("MR", _MINUTE), **dict.fromkeys("STXrcs", _SECOND)}


class TemplateError(ValueError):
    """The path template cannot be compiled."""


def segment(text: str) -> str:
    """``text`` made safe as (part of) one path segment: see the module docstring."""
    if not text:
        return NULL_SEGMENT
    out = quote(text, safe="")
    if "~" in out:  # quote() leaves ~ alone; S3's guidelines list it among characters to avoid
        out = out.replace("~", "%7E")
    if out[0] in "._":
        out = "%2E" + out[1:] if out[0] == "." else "%5F" + out[1:]
    return out


def _scalar(value) -> str:
    if value is None:
        return NULL_SEGMENT
    t = type(value)
    if t is str:
        return segment(value)
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return segment(str(value))
    if t is float:
        return segment(repr(value))
    if t in (bytes, bytearray):
        return segment(bytes(value).decode("utf-8", "replace"))
    return segment(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def _grain(fmt: str) -> int:
    grain = _DAY
    for d in re.findall(r"%[-_0^#]?(.)", fmt):
        grain = min(grain, _GRAIN.get(d, 1))
    return grain


class _Field:
    __slots__ = ("kind", "arg", "text")

    def __init__(self, kind: str, arg, text: str):
        self.kind, self.arg, self.text = kind, arg, text


def _parse_field(body: str, template: str) -> _Field:
    if body in ("topic", "partition", "offset", "key", "timestamp"):
        return _Field(body, None, body)
    if body.startswith("timestamp:"):
        fmt = body[len("timestamp:"):]
        if not fmt:
            raise TemplateError(f"{{timestamp:}} needs a strftime format, e.g. {{timestamp:%Y-%m-%d}}, in {template!r}")
        if fmt.startswith("/") or fmt.endswith("/") or "//" in fmt:
            raise TemplateError(f"{{{body}}}: the format must not start or end with / nor hold //")
        return _Field("timestamp", fmt, body)
    if _VALUE.match(body):
        return _Field("value", tuple(body.split(".")[1:]), body)
    raise TemplateError(f"unknown field {{{body}}} in path template {template!r}; use {{topic}}, {{partition}}, "
                        "{offset}, {key}, {timestamp:<strftime>} or {value.<field>}")


class PathTemplate:
    """A compiled path template. ``group(batch)`` evaluates it for every record of a batch."""

    def __init__(self, template: str):
        self.template = template
        self.parts: list = []  # literal str or _Field, in order
        pos = 0
        for m in _FIELD.finditer(template):
            if m.start() > pos:
                self.parts.append(template[pos:m.start()])
            self.parts.append(_parse_field(m[1], template))
            pos = m.end()
        if pos < len(template):
            self.parts.append(template[pos:])
        literal = "".join(p if isinstance(p, str) else "x" for p in self.parts)
        if "{" in literal or "}" in literal:
            raise TemplateError(f"unbalanced brace in path template {template!r}")
        if _CONTROL.search(literal):
            raise TemplateError(f"path template {template!r} holds a control character or a backslash")
        if literal.startswith("/") or literal.endswith("/") or "//" in literal:
            raise TemplateError(f"path template {template!r} must not start or end with / nor hold //")
        for seg in literal.split("/"):
            if seg in (".", "..") or seg[:1] in (".", "_"):
                raise TemplateError(f"path template {template!r}: segment {seg!r} starts with . or _, which "
                                    "Hive, Spark and Athena treat as hidden (and _kpipe holds kpipe's state)")
        self.fields = [p for p in self.parts if not isinstance(p, str)]
        self.per_record = any(f.kind not in ("topic", "partition") for f in self.fields)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"

    def render(self, topic: str, partition: int, values: list) -> str:
        """The path for one record whose fields evaluated to ``values`` (in ``fields`` order)."""
        it = iter(values)
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif p.kind == "topic":
                out.append(topic)  # Kafka topic names are path-safe already: [A-Za-z0-9._-]+
            elif p.kind == "partition":
                out.append(str(partition))
            else:
                out.append(next(it))
        return "".join(out)

    def group(self, batch) -> list[tuple[str, list[int] | None]]:
        """``[(path, record indices)]`` in order of first appearance; indices None means every
        record of the batch (the template has no per-record field)."""
        if not self.per_record:
            return [(self.render(batch.topic, batch.partition, ()), None)]
        columns = [self._column(f, batch) for f in self.fields if f.kind not in ("topic", "partition")]
        groups: dict = {}
        if len(columns) == 1:
            for i, seg in enumerate(columns[0]):
                g = groups.get(seg)
                if g is None:
                    groups[seg] = [i]
                else:
                    g.append(i)
            return [(self.render(batch.topic, batch.partition, (seg,)), idx) for seg, idx in groups.items()]
        for i, segs in enumerate(zip(*columns)):
            g = groups.get(segs)
            if g is None:
                groups[segs] = [i]
            else:
                g.append(i)
        return [(self.render(batch.topic, batch.partition, segs), idx) for segs, idx in groups.items()]

    def _column(self, f: _Field, batch) -> list[str]:
        """The field's path segment for every record of ``batch``."""
        if f.kind == "offset":
            return [str(o) for o in batch.offsets]
        if f.kind == "key":
            return [NULL_SEGMENT if k is None else segment(k.decode("utf-8", "replace")) for k in batch.keys]
        if f.kind == "timestamp":
            return self._timestamps(f.arg, batch.timestamps)
        return self._values(f.arg, batch.values)

    def _timestamps(self, fmt: str | None, stamps: list) -> list[str]:
        if fmt is None:
            return [NULL_SEGMENT if ts is None else str(ts) for ts in stamps]
        # A / in the format (%Y/%m/%d) makes levels, as in Kafka Connect's path.format; each
        # level is made safe on its own.
        grain = _grain(fmt)
        cache = self._cache.setdefault(fmt, {})
        if len(cache) > 100_000:
            cache.clear()
        out = []
        append = out.append
        last_bucket = last_text = None
        for ts in stamps:
            if ts is None:
                append(NULL_SEGMENT)
                continue
            bucket = ts // grain
            if bucket != last_bucket:  # consecutive records mostly share a bucket
                last_text = cache.get(bucket)
                if last_text is None:
                    when = _EPOCH + dt.timedelta(milliseconds=bucket * grain)
                    last_text = cache[bucket] = "/".join(map(segment, when.strftime(fmt).split("/")))
                last_bucket = bucket
            append(last_text)
        return out

    def _values(self, path: tuple, values: list) -> list[str]:
        cache: dict = {}
        out = []
        append = out.append
        first, rest = path[0], path[1:]
        for v in values:
            x = v.get(first) if type(v) is dict else None
            for name in rest:
                x = x.get(name) if type(x) is dict else None
            t = type(x)
            if t is str or t is int:
                s = cache.get(x) if t is str else cache.get((int, x))
                if s is None:
                    s = _scalar(x)
                    cache[x if t is str else (int, x)] = s
                append(s)
            else:
                append(_scalar(x))
        return out


# -- object names from Kafka coordinates ----------------------------------------------------

_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{19})\+(?P<last>\d{19})"
                   r"(?P<ext>(\.[a-z]+){1,2})$")
_CONNECT_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<start>\d+)(?P<ext>(\.[a-z]+){1,2})$")


def object_name(topic: str, partition: int, first: int, last: int, ext: str) -> str:
    """kpipe's name for a file or object holding offsets ``first..last`` of a partition:
    ``<topic>+<partition>+<first>+<last><ext>``, offsets zero-padded to 19 digits so that names
    sort in offset order."""
    return f"{topic}+{partition}+{first:019d}+{last:019d}{ext}"


def parse_object_name(name: str):
    """``(topic, partition, first, last)`` for a name ``object_name`` made, else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    return m["topic"], int(m["partition"]), int(m["first"]), int(m["last"])


def connect_name(topic: str, partition: int, start: int, ext: str, width: int = 10) -> str:
    """Kafka Connect's storage connectors' name: ``<topic>+<partition>+<start offset><ext>``, the
    start offset zero-padded to ``filename.offset.zero.pad.width`` (default 10) digits."""
    return f"{topic}+{partition}+{start:0{width}d}{ext}"


def parse_connect_name(name: str):
    """``(topic, partition, start)`` for a name ``connect_name`` made, else None."""
    m = _CONNECT_NAME.match(name)
    if m is None:
        return None
    return m["topic"], int(m["partition"]), int(m["start"])


class Layout:
    """How object keys are built under a prefix.

    ``kpipe``:          ``<prefix>/<path>/<topic>+<partition>+<first>+<last>.<ext>``, path
                        default ``{topic}/{partition}`` (the files sink's layout).
    ``kafka-connect``:  ``<prefix>/<topics_dir>/<topic>/<path>/<topic>+<partition>+<start>.<ext>``
                        as Confluent's S3 sink names them; path default ``partition={partition}``
                        (its DefaultPartitioner); a template replaces that encoded partition, as
                        its FieldPartitioner and TimeBasedPartitioner do.
    """

    DEFAULT_PATHS = {"kpipe": "{topic}/{partition}", "kafka-connect": "partition={partition}"}

    def __init__(self, style: str, prefix: str, template: str | None, ext: str,
                 topics_dir: str = "topics", pad_width: int = 10):
        if style not in self.DEFAULT_PATHS:
            raise ValueError(f"unknown layout {style!r}")
        self.style = style
        self.template = PathTemplate(template or self.DEFAULT_PATHS[style])
        self.ext = ext
        self.pad_width = pad_width
        base = [s for s in prefix.strip("/").split("/") if s]
        if style == "kafka-connect":
            base += [s for s in topics_dir.strip("/").split("/") if s]
        self.base = "/".join(base)

    def key(self, topic: str, partition: int, path: str, first: int, last: int) -> str:
        if self.style == "kpipe":
            parts = [self.base, path, object_name(topic, partition, first, last, self.ext)]
        else:
            parts = [self.base, topic, path, connect_name(topic, partition, first, self.ext, self.pad_width)]
        return "/".join(p for p in parts if p)

    def owner(self, key: str):
        """``(topic, partition, first offset)`` of a data object key of this layout, else None."""
        name = key.rsplit("/", 1)[-1]
        if self.style == "kpipe":
            parsed = parse_object_name(name)
            return None if parsed is None else parsed[:3]
        return parse_connect_name(name)
