"""Where a table's data files go, and a probe file written and deleted there: proof that the
sink may write the table's files, without a commit (no snapshot, and no manifest lists it)."""
from __future__ import annotations

import os
import uuid

from kpipe.sinks.tables import remove_empty_dirs

__all__ = ["probe_location", "write_and_delete"]


def probe_location(catalog, table, identifier: str):
    """``(FileIO, path)`` of a new data file of ``table``, or of the table ``identifier`` that
    the first write will create; None when that location cannot be known before then."""
    from pyiceberg.catalog import MetastoreCatalog
    from pyiceberg.exceptions import NoSuchNamespaceError
    from pyiceberg.io import load_file_io
    from pyiceberg.schema import Schema
    from pyiceberg.table.locations import load_location_provider

    name = f"_kpipe_probe_{uuid.uuid4().hex}"
    if table is not None:
        return table.io, table.location_provider().new_data_location(name)
    if not isinstance(catalog, MetastoreCatalog):
        return None  # a REST catalog's server picks the location when the table is created
    try:  # a staged creation commits nothing: a metastore catalog only computes the location
        location = catalog.create_table_transaction(identifier, schema=Schema()).table_metadata.location
    except NoSuchNamespaceError:  # created with the table: the metastore catalogs' convention
        warehouse = str(catalog.properties.get("warehouse", ""))
        if "://" not in warehouse and not warehouse.startswith("/"):
            return None  # no warehouse to derive it from
        ns, _, tbl = identifier.rpartition(".")
        location = f"{warehouse.rstrip('/')}/{ns}/{tbl}"
    io = load_file_io(dict(catalog.properties), location)
    return io, load_location_provider(location, {}).new_data_location(name)


def write_and_delete(io, path: str) -> None:
    """Write a small file at ``path`` and delete it; on a local file system also the
    directories the write created (a table not created yet leaves no trace)."""
    local = path.removeprefix("file://") if path.startswith(("file://", "/")) else None
    keep = _deepest_existing(local) if local is not None else None
    with io.new_output(path).create(overwrite=True) as f:
        f.write(b"kpipe write probe\n")
    io.delete(path)
    if local is not None:
        remove_empty_dirs(local, keep)


def _deepest_existing(path: str) -> str:
    d = os.path.dirname(path)
    while not os.path.isdir(d) and d != os.path.dirname(d):
        d = os.path.dirname(d)
    return d
