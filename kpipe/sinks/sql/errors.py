"""Sorting database exceptions into kpipe's taxonomy: retry, bad record, or stop."""
from __future__ import annotations

import sqlalchemy as sa

__all__ = ["is_database_error", "is_data_error", "is_retryable", "is_schema_error"]

# MySQL client error codes for a lost or refused connection.
_MYSQL_CONNECTION = {2002, 2003, 2006, 2013, 2055, 1927, 1053}
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock. 1305 is "SAVEPOINT ... does not exist":
# a deadlock inside a savepoint (the first insert of a partition's offsets row) rolls back the
# whole transaction, savepoint included, and the RELEASE or ROLLBACK TO that follows gets 1305.
_MYSQL_TRANSIENT = {1205, 1213}
_MYSQL_SAVEPOINT_LOST = 1305

# A table that cannot take a field: the record that brought the field is at fault, not the
# server. PostgreSQL sqlstates: 42701 duplicate column, 54011 too many columns, 42601 syntax
# error (a zero-length delimited identifier ""), 42602 invalid name, 42622 name too long,
# 54000 program limit exceeded (row too big).
_PG_SCHEMA = {"42701", "54011", "42601", "42602", "42622", "54000"}
# MySQL/MariaDB: 1059 identifier too long, 1060 duplicate column name, 1117 too many columns,
# 1118 row size too large, 1166 incorrect column name, 1300 invalid utf8mb3 string (an emoji in
# a name), 1063 incorrect column specifier, 1064 syntax error.
_MYSQL_SCHEMA = {1059, 1060, 1063, 1064, 1117, 1118, 1166, 1300}
# SQLite reports no code for these beyond SQLITE_ERROR: the message tells them apart.
_SQLITE_SCHEMA = ("duplicate column name", "too many columns", "zero-length")
# SQLITE_BUSY (5) and SQLITE_LOCKED (6): another connection holds the lock; worth a retry.
_SQLITE_BUSY = {5, 6}


# Drivers whose exceptions can reach us unwrapped (psycopg's COPY runs on the raw connection).
_DRIVERS = {"psycopg", "psycopg2", "pymysql", "MySQLdb", "sqlite3"}


def is_database_error(exc: BaseException) -> bool:
    """Raised by the database or the way to it, wrapped by SQLAlchemy or not."""
    return (isinstance(exc, (sa.exc.SQLAlchemyError, OSError))
            or type(exc).__module__.partition(".")[0] in _DRIVERS)


def _driver_error(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def is_data_error(exc: BaseException) -> bool:
    """A constraint violation or a value that does not fit: the record's fault, not the server's."""
    if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError)):
        return True
    if isinstance(exc, sa.exc.StatementError) and isinstance(exc.orig, (TypeError, ValueError)):
        return True  # SQLAlchemy's own bind processing rejected the value
    orig = _driver_error(exc)
    if isinstance(orig, OverflowError):
        return True  # sqlite3 binding an integer past 64 bits: the value does not fit
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:  # psycopg: class 22 data exception, 23 integrity constraint violation
        return sqlstate[:2] in ("22", "23")
    name = type(orig).__name__
    return name in ("IntegrityError", "DataError")


def _mysql_errno(orig: BaseException) -> int | None:
    if type(orig).__module__.partition(".")[0] not in ("pymysql", "MySQLdb"):
        return None
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _sqlite(orig: BaseException) -> bool:
    return type(orig).__module__ == "sqlite3"


def is_schema_error(exc: BaseException) -> bool:
    """DDL that failed because of the columns asked for (a name the table cannot take, too many
    columns): the fault of the record that brought the field, never worth a retry."""
    orig = _driver_error(exc)
    errno = _mysql_errno(orig)  # first: PyMySQL's exceptions carry a sqlstate too
    if errno is not None:
        return errno in _MYSQL_SCHEMA
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in _PG_SCHEMA or sqlstate[:2] == "22"
    if _sqlite(orig):
        return any(m in str(orig) for m in _SQLITE_SCHEMA)
    # psycopg refuses a NUL in the statement before sending it (a DataError without sqlstate)
    return is_data_error(exc)


def is_retryable(exc: BaseException) -> bool:
    """A connection that failed, dropped or timed out; nothing about the data.

    Decided by the SQLSTATE or the driver's error code, not the exception class: SQLite's
    "duplicate column name" is an ``OperationalError`` just as "database is locked" is."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = _driver_error(exc)
    if _sqlite(orig):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_BUSY
        text = str(orig)
        return "locked" in text or "busy" in text
    errno = _mysql_errno(orig)  # first: PyMySQL's exceptions carry a sqlstate too
    if errno is not None:
        if errno == _MYSQL_SAVEPOINT_LOST:
            return "SAVEPOINT" in str(orig).upper()
        return errno in _MYSQL_CONNECTION or errno in _MYSQL_TRANSIENT
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        # 08 connection exception, 57P01-03 admin shutdown / cannot connect now, 57014 query
        # canceled (statement_timeout: a slow server or a lock, not the record), 40001/40P01
        # serialization failure and deadlock: all safe to retry with the same batch.
        return sqlstate[:2] == "08" or sqlstate in ("57P01", "57P02", "57P03", "57014", "40001", "40P01",
                                                    "53300")
    if type(orig).__module__.startswith("psycopg") and type(orig).__name__ in ("OperationalError", "InterfaceError"):
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError))
