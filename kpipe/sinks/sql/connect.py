"""The DBAPI connection arguments that bound every network wait of the SQL sink.

Without them a database that stops answering (a network partition: the connection stays
open, no byte arrives) hangs a write forever. The names are the drivers' own:

- PostgreSQL (libpq, for psycopg 3 and psycopg2): ``connect_timeout``; TCP keepalives
  (``keepalives``, ``keepalives_idle``, ``keepalives_interval``, ``keepalives_count``), which
  drop a connection whose peer stopped answering while kpipe waits for a result;
  ``tcp_user_timeout``, which drops it when sent data stays unacknowledged; and the server's
  ``statement_timeout``, sent as ``options=-c statement_timeout=...``.
- MySQL/MariaDB (PyMySQL, mysqlclient): ``connect_timeout``, and ``read_timeout`` /
  ``write_timeout``, the client's socket timeouts, set to the statement timeout.

libpq has no read timeout of its own: a connection whose peer's kernel still acknowledges
(a proxy that stopped forwarding) is caught by the runner's bound on a sink call instead
(``retry.attempt_timeout``).
"""
from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa

from kpipe.spec.units import parse_duration

__all__ = ["connect_args", "CONNECT_TIMEOUT", "STATEMENT_TIMEOUT"]

CONNECT_TIMEOUT = "10s"
STATEMENT_TIMEOUT = "60s"
# A silent peer is dropped after KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT = 25 s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3
TCP_USER_TIMEOUT_MS = 30_000

_LIBPQ_DRIVERS = {"psycopg", "psycopg2"}
_MYSQL_DRIVERS = {"pymysql", "mysqldb"}


def connect_args(url: sa.engine.URL, config: Mapping[str, Any]) -> dict:
    """``connect_args`` for ``create_engine`` from the sink's ``url`` and config."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    connect = parse_duration(config.get("connect_timeout") or CONNECT_TIMEOUT)
    statement = parse_duration(config.get("statement_timeout") or STATEMENT_TIMEOUT)
    if backend == "postgresql" and driver in _LIBPQ_DRIVERS:
        args: dict = {"connect_timeout": max(1, round(connect)), "keepalives": 1,
                      "keepalives_idle": KEEPALIVE_IDLE, "keepalives_interval": KEEPALIVE_INTERVAL,
                      "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}
        if statement > 0:
            options = url.query.get("options")
            options = options[-1] if isinstance(options, tuple) else options
            args["options"] = " ".join(filter(None, (options, f"-c statement_timeout={round(statement * 1000)}")))
        return args
    if backend in ("mysql", "mariadb") and driver in _MYSQL_DRIVERS:
        args = {"connect_timeout": max(1, round(connect))}
        if statement > 0:
            args["read_timeout"] = args["write_timeout"] = max(1, round(statement))
        return args
    if backend in ("postgresql", "mysql", "mariadb"):  # another driver: only what kpipe always passed
        return {"connect_timeout": max(1, round(connect))}
    return {}
