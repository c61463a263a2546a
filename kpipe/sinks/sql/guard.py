"""No DELETE or UPDATE without a WHERE clause, ever: an empty condition would empty the table.

Two lines of defense: ``delete_where`` builds the sink's only DELETE and refuses an empty
condition; ``refuse_unbounded_writes`` checks every statement the engine sends, whoever built
it. The check only looks further at statements starting with DELETE or UPDATE, so inserts and
COPY (which psycopg runs on the raw connection, past SQLAlchemy) pay nothing for it.
"""
from __future__ import annotations

import re

import sqlalchemy as sa

from kpipe.api import FatalError

__all__ = ["delete_where", "refuse_unbounded_writes"]

# Comments and string literals, which could hold a WHERE that is not one.
_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.S)
_WHERE = re.compile(r"\bWHERE\b", re.I)


def delete_where(table: sa.Table, conditions: list) -> sa.Delete:
    """``DELETE FROM table WHERE c1 AND c2 ...``; refuses an empty list of conditions."""
    if not conditions:
        raise FatalError(f"refusing a DELETE on {table.name} without a WHERE clause")
    return table.delete().where(sa.and_(*conditions))


def _unbounded(statement: str) -> bool:
    head = statement.lstrip()[:6].upper()
    if head != "DELETE" and head != "UPDATE":
        return False
    return not _WHERE.search(_NOISE.sub(" ", statement))


def refuse_unbounded_writes(engine: sa.Engine) -> None:
    """Refuse, before it reaches the database, any DELETE or UPDATE without a WHERE clause."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _check(_conn, _cursor, statement, _params, _context, _executemany):
        if _unbounded(statement):
            raise FatalError(f"refusing a statement without a WHERE clause: {statement.strip()[:200]}")
