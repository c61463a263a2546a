"""Sorting database exceptions into kpipe's taxonomy: retry, bad record, or stop."""
from __future__ import annotations

import sqlalchemy as sa

__all__ = ["is_database_error", "is_data_error", "is_retryable"]

# MySQL client error codes for a lost or refused connection.
_MYSQL_CONNECTION = {2002, 2003, 2006, 2013, 2055, 1927, 1053}


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


def is_retryable(exc: BaseException) -> bool:
    """A connection that failed, dropped or timed out; nothing about the data."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = _driver_error(exc)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        # 08 connection exception, 57P01-03 admin shutdown / cannot connect now, 57014 query
        # canceled (statement_timeout: a slow server or a lock, not the record), 40001/40P01
        # serialization failure and deadlock: all safe to retry with the same batch.
        return sqlstate[:2] == "08" or sqlstate in ("57P01", "57P02", "57P03", "57014", "40001", "40P01",
                                                    "53300")
    if type(orig).__module__.startswith("psycopg") and type(orig).__name__ in ("OperationalError", "InterfaceError"):
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_CONNECTION or args[0] in (1205, 1213)  # lock wait timeout, deadlock
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError))
