"""The offsets table: (group, topic, partition) -> next offset, written in the data's transaction.

The update is a compare-and-set on the offset the batch starts at. An instance that lost a
partition but is still writing (a zombie) finds the offset moved on, matches no row, and its
transaction writes nothing for that partition.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

__all__ = ["offsets_table", "load", "compare_and_set"]


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
