"""Opening the catalog and the table; pyiceberg's failures as kpipe's error kinds."""
from __future__ import annotations

from kpipe.api import FatalError, RetryableError
from kpipe.sinks.tables import storage_fatal

try:
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
except ImportError as exc:  # the plugin loader turns this into `pip install "kpipe[iceberg]"`
    raise ImportError(f"the iceberg sink needs pyiceberg: pip install \"kpipe[iceberg]\" ({exc})") from exc

__all__ = ["open_catalog", "load_table", "transient", "NoSuchTableError"]

# Errors a later attempt may not see: a catalog database or object store that is down or busy.
_TRANSIENT_NAMES = {"OperationalError", "InterfaceError", "TimeoutError", "ConnectionError", "OSError",
                    "ConnectionRefusedError", "ClientError", "WaitingForLockException"}


def transient(exc: BaseException) -> bool:
    """A later attempt may succeed: not a refused permission, a missing bucket or a full disk."""
    return any(c.__name__ in _TRANSIENT_NAMES for c in type(exc).__mro__) and not storage_fatal(exc)


def open_catalog(props: dict):
    props = {k: str(v) for k, v in props.items() if v is not None and v != ""}
    name = props.pop("name", "kpipe")
    try:
        return load_catalog(name, **props)
    except Exception as exc:
        if transient(exc):
            raise RetryableError(f"iceberg catalog {name!r}: {exc}") from exc
        raise FatalError(f"iceberg catalog {name!r}: {type(exc).__name__}: {exc}") from exc


def load_table(catalog, identifier: str):
    """The table, or None when it does not exist yet."""
    try:
        return catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
