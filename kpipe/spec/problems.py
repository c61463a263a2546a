"""What a spec check reports: problems that name a file, a line, a column and a key path."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["Problem", "SpecError", "format_path", "in_file_order", "ROOT"]

ROOT = "<root>"


def format_path(path: Iterable) -> str:
    """``("source", "topics", 1)`` -> ``source.topics[1]``; the empty path is ``<root>``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or ROOT


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, at a 1-based line and column.

    A ``warning`` does not stop the spec from running: it states a guarantee the spec asks for
    and the installed plugins do not declare.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        kind = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {kind}{self.path}: {self.message}"


def in_file_order(problems: Iterable[Problem]) -> list[Problem]:
    """Each distinct problem once (two schema keywords may well describe the same mistake),
    sorted by line, column, path and message."""
    return sorted(set(problems), key=lambda p: (p.line, p.col, p.path, p.message))


class SpecError(Exception):
    """A spec cannot be used. ``problems`` holds every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = in_file_order(problems)
        super().__init__("\n".join(map(str, self.problems)))
