"""``${VAR}``, ``${VAR:-default}`` and ``${file:PATH}`` in spec strings, with ``$${`` for a
literal ``${``.

``${file:PATH}`` is the file's content less one trailing newline, as Docker and Kubernetes
secrets and Kafka Connect's FileConfigProvider are used: ``${file:/run/secrets/pg_password}``.
A relative PATH is relative to the spec's directory. It takes no default: a secret that is
missing stops the run at its line and column instead of running with a stand-in.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

from kpipe.redact import secret_name
from kpipe.safe_read import UnreadableFile, read_regular_file

__all__ = ["expand", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 64 * 1024  # a secret, not a data file

# One alternation, so an escaped "$${" is consumed before it can start a reference.
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.S)


def expand(text: str, env: Mapping[str, str], *, base_dir: str | None = None,
           secrets: set | None = None) -> tuple[str, list[tuple[int, str]]]:
    """Return ``text`` with references replaced, and ``(offset, message)`` for each bad one.

    ``offset`` is where the ``${`` starts in ``text``. A bad reference expands to nothing,
    so the caller gets a string either way. As in the shell, ``:-`` uses the default when
    the variable is unset or empty. ``base_dir`` anchors relative ``${file:}`` paths (default:
    the working directory). Values that are secrets (from ``${file:}``, or from a variable
    whose name says so, see ``kpipe.redact``) are added to ``secrets`` when given.
    """
    out: list[str] = []
    errors: list[tuple[int, str]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        out.append(text[pos:match.start()])
        pos = match.end()
        token = match.group(0)
        if token == "$${":
            out.append("${")
            continue
        body = match.group("body")
        if body is None:
            errors.append((match.start(), "unterminated '${': close it with '}', or write '$${' for a literal '${'"))
            continue
        ref = _BODY.fullmatch(body)
        if ref is None and body.startswith("file:"):
            value, error = _read_file(body[5:], base_dir)
            if error:
                errors.append((match.start(), error))
                continue
            if secrets is not None:
                secrets.add(value)
            out.append(value)
            continue
        if ref is None:
            errors.append((match.start(), f"bad variable reference {token!r}: use ${{NAME}} or ${{NAME:-default}}"))
            continue
        name, default = ref.group("name"), ref.group("default")
        if default is not None and "${" in default:
            errors.append((match.start(), f"nested references are not supported in {token!r}"))
            continue
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                errors.append((match.start(), f"environment variable {name} is not set; "
                                              f"set it, or give a default: ${{{name}:-...}}"))
                continue
            value = default
        if secrets is not None and secret_name(name):
            secrets.add(value)
        out.append(value)
    out.append(text[pos:])
    return "".join(out), errors


def _read_file(path: str, base_dir: str | None) -> tuple[str, str | None]:
    """``(content less one trailing newline, None)`` or ``("", the problem)``."""
    if not path:
        return "", "empty path in '${file:}': write ${file:/run/secrets/NAME}"
    if ":-" in path:
        return "", (f"'${{file:{path}}}': a file reference takes no default; a missing secret "
                    "must stop the run (use ${VAR:-default} for values that may fall back)")
    full = os.path.join(base_dir or "", os.path.expanduser(path))
    try:  # a FIFO or a device is refused, never opened: it could block, or never end
        data = read_regular_file(full, MAX_FILE_BYTES, "secret file")
    except UnreadableFile as exc:
        return "", f"cannot read secret file {path}: {exc.reason}"
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        return "", f"secret file {path} is not UTF-8 text"
    if value.endswith("\n"):
        value = value[:-2] if value.endswith("\r\n") else value[:-1]
    return value, None
