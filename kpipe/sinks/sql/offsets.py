"""The offsets table: (group, topic, partition) -> next offset, written in the data's transaction.

The update is a compare-and-set on the offset the batch starts at. An instance that lost a
partition but is still writing (a zombie) finds the offset moved on, matches no row, and its
transaction writes nothing for that partition.

``advance_all`` moves every partition of a write in one statement, the compare-and-set checked
per row: it succeeds only when the rows it updated are exactly the partitions it was given.
Otherwise the caller rolls the transaction back and takes ``compare_and_set`` partition by
partition, which finds the conflicts (or inserts a partition's first row).
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

__all__ = ["offsets_table", "load", "compare_and_set", "advance_all"]


def offsets_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, _, table = name.rpartition(".")
    return sa.Table(
        table, metadata,
        sa.Column("group_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("kafka_partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema or None,
    )


def load(conn, table: sa.Table, group: str, partitions) -> dict:
    wanted = set(partitions)
    topics = sorted({t for t, _ in wanted})
    rows = conn.execute(sa.select(table.c.topic, table.c.kafka_partition, table.c.next_offset)
                        .where(table.c.group_id == group, table.c.topic.in_(topics)))
    return {(t, p): o for t, p, o in rows if (t, p) in wanted}


class _Statements:
    """The compare-and-set statements, built once per table: SQLAlchemy then reuses their
    compiled form instead of building and compiling new constructs for every batch."""

    def __init__(self, table: sa.Table):
        c = table.c
        key = ((c.group_id == sa.bindparam("g")) & (c.topic == sa.bindparam("t"))
               & (c.kafka_partition == sa.bindparam("p")))
        self.update = (table.update().where(key & (c.next_offset == sa.bindparam("expected")))
                       .values(next_offset=sa.bindparam("new"), updated_at=sa.bindparam("now")))
        self.select = sa.select(c.next_offset).where(key)
        self.insert = table.insert().values(group_id=sa.bindparam("g"), topic=sa.bindparam("t"),
                                            kafka_partition=sa.bindparam("p"),
                                            next_offset=sa.bindparam("new"), updated_at=sa.bindparam("now"))


_statements: dict = {}


def compare_and_set(conn, table: sa.Table, group: str, topic: str, partition: int,
                    expected: int, new: int) -> int | None:
    """Move the offset from ``expected`` to ``new``; None on success, else the offset found.

    Takes the row lock, so a concurrent writer of the same partition waits for this
    transaction and then finds the offset moved.
    """
    st = _statements.get(id(table))
    if st is None or st.table is not table:
        st = _statements[id(table)] = _Statements(table)
        st.table = table
    args = {"g": group, "t": topic, "p": partition, "expected": expected, "new": new,
            "now": dt.datetime.now(dt.timezone.utc)}
    if conn.execute(st.update, args).rowcount == 1:
        return None
    found = conn.execute(st.select, args).scalar()
    if found is not None:
        return found
    # First write for this partition: insert, in a savepoint so a racing insert of the same
    # key (the other writer wins) does not abort our whole transaction.
    try:
        with conn.begin_nested():
            conn.execute(st.insert, args)
        return None
    except sa.exc.IntegrityError:
        return conn.execute(st.select, args).scalar()


# PostgreSQL: one statement whatever the number of partitions (arrays, not one VALUES row each),
# so the server parses and plans the same text every time.
_PG_ADVANCE = (
    "UPDATE {table} AS o SET next_offset = v.new, updated_at = :now "
    "FROM unnest(CAST(:t AS text[]), CAST(:p AS integer[]), CAST(:e AS bigint[]), CAST(:n AS bigint[])) "
    "AS v(topic, kafka_partition, expected, new) "
    "WHERE o.group_id = :g AND o.topic = v.topic AND o.kafka_partition = v.kafka_partition "
    "AND o.next_offset = v.expected")

_pg_statements: dict = {}


def advance_all(conn, table: sa.Table, group: str, moves: list[tuple[str, int, int, int]]) -> bool:
    """Move every (topic, partition, expected, new) in one statement; True when each row
    matched its expected offset. On False some rows may have moved: roll back, then use
    ``compare_and_set``. Each (topic, partition) must appear once in ``moves``."""
    now = dt.datetime.now(dt.timezone.utc)
    if conn.dialect.name == "postgresql":
        stmt = _pg_statements.get(id(table))
        if stmt is None or stmt[0] is not table:
            name = conn.dialect.identifier_preparer.format_table(table)
            stmt = _pg_statements[id(table)] = (table, sa.text(_PG_ADVANCE.format(table=name)).bindparams(
                sa.bindparam("now", type_=sa.DateTime(timezone=True))))
        t, p, e, n = (list(col) for col in zip(*moves))
        return conn.execute(stmt[1], {"g": group, "now": now, "t": t, "p": p, "e": e, "n": n}).rowcount == len(moves)
    # MariaDB, SQLite, ...: a CASE picks each row's new offset; the WHERE is the compare-and-set
    # of every row (MySQL's rowcount counts matched rows: SQLAlchemy sets CLIENT_FOUND_ROWS).
    # A statement per _GENERIC_ROWS partitions keeps within SQLite's limit of bound parameters.
    moved = 0
    for i in range(0, len(moves), _GENERIC_ROWS):
        moved += _advance_generic(conn, table, group, moves[i:i + _GENERIC_ROWS], now)
    return moved == len(moves)


_GENERIC_ROWS = 1000


def _advance_generic(conn, table: sa.Table, group: str, moves: list, now: dt.datetime) -> int:
    c = table.c
    matches = [(c.topic == t) & (c.kafka_partition == p) for t, p, _, _ in moves]
    stmt = (table.update()
            .where(c.group_id == group,
                   sa.or_(*[m & (c.next_offset == e) for m, (_, _, e, _) in zip(matches, moves)]))
            .values(next_offset=sa.case(*[(m, new) for m, (_, _, _, new) in zip(matches, moves)],
                                        else_=c.next_offset),
                    updated_at=now))
    return conn.execute(stmt).rowcount
