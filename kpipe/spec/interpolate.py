"""``${VAR}`` and ``${VAR:-default}`` in spec strings, with ``$${`` for a literal ``${``."""
from __future__ import annotations

import re
from typing import Mapping

__all__ = ["expand"]

# One alternation, so an escaped "$${" is consumed before it can start a reference.
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.S)


def expand(text: str, env: Mapping[str, str]) -> tuple[str, list[tuple[int, str]]]:
    """Return ``text`` with references replaced, and ``(offset, message)`` for each bad one.

    ``offset`` is where the ``${`` starts in ``text``. A bad reference expands to nothing,
    so the caller gets a string either way. As in the shell, ``:-`` uses the default when
    the variable is unset or empty.
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
        out.append(value)
    out.append(text[pos:])
    return "".join(out), errors
