"""Log output: human-readable text (the default) or one JSON object per line, for journald
and ELK; either way, every record passes ``RedactFilter`` first, so no secret is printed.

JSON lines carry ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``,
``exc`` (a traceback, when there is one) and any ``extra=`` fields of the call.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys

from kpipe.redact import redact

__all__ = ["setup_logging", "tag_pipeline", "JsonFormatter", "RedactFilter", "TEXT_FORMAT", "FORMATS"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMATS = ("text", "json")

# The attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message, its traceback and its string ``extra=`` fields.

    The message is rendered here (``msg % args``) and the args dropped, so what any handler
    prints afterwards is the redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then exc and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                  .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return json.dumps(out, default=str, ensure_ascii=False)


class _PipelineField(logging.Filter):
    def __init__(self, name: str):
        super().__init__()
        self.name_ = name

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "pipeline"):
            record.pipeline = self.name_
        return True


def tag_pipeline(name: str) -> None:
    """Give every record through kpipe's handlers a ``pipeline`` field (a JSON key; the text
    format does not show it), so the lines of many pipelines can be told apart in one stream."""
    for handler in logging.getLogger("kpipe").handlers:
        handler.addFilter(_PipelineField(name))


def setup_logging(verbosity: int, fmt: str = "text") -> None:
    """kpipe's loggers at INFO (DEBUG with ``verbosity`` > 0, WARNING below 0) to stderr in
    ``fmt``; other libraries' warnings go through the same handler, so a JSON stream stays JSON
    and their messages are redacted too."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, "%H:%M:%S"))
    handler.addFilter(RedactFilter())
    root = logging.getLogger("kpipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    top = logging.getLogger()
    top.handlers[:] = [handler]
    top.setLevel(logging.WARNING)
    if fmt == "json":
        logging.captureWarnings(True)
