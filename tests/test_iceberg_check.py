"""``kpipe check`` proves a table sink may write its table, and leaves no trace: the iceberg
sink writes and deletes a probe file where the table's data files go (no commit, so no
snapshot), the delta sink a probe object beside the table. A read-only warehouse or table
fails the check with exit 2 (retrying cannot help), not 3.

Root ignores permission bits, so under root ``kpipe check`` runs with CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped from its bounding set: the files' modes then bind it as they bind
any other user."""
from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kit import ROOT, kpipe_cmd, unique
from kpipe.api import FatalError, SinkContext
from kpipe.sinks.iceberg import plugin as iceberg
from s3kit import make_batch, moto_server  # noqa: F401

pytest.importorskip("pyiceberg")
from pyiceberg.catalog import load_catalog  # noqa: E402

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
TABLE = "lake.orders"


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork


def _bound_by_modes() -> None:
    """In the child before exec: lose root's right to ignore file modes."""
    if os.geteuid() == 0:
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def modes_bind(tmp_path_factory):
    """Skip unless a read-only directory really refuses a write from a ``kpipe check`` child."""
    d = tmp_path_factory.mktemp("ro")
    d.chmod(0o555)
    try:
        proc = subprocess.run(["touch", str(d / "x")], preexec_fn=_bound_by_modes, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot drop root's file-mode override here: {exc}")
    finally:
        d.chmod(0o755)
    if proc.returncode == 0:
        pytest.skip("a read-only directory accepts writes here (root with CAP_DAC_OVERRIDE)")


def check(spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run(kpipe_cmd("check", str(spec)), capture_output=True, text=True, timeout=120, cwd=ROOT,
                          stdin=subprocess.DEVNULL, preexec_fn=_bound_by_modes)


def catalog(root: Path) -> dict:
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog.db", "warehouse": f"file://{root}/warehouse"}


def write_spec(root: Path, brokers: str, topic: str, sink: dict) -> Path:
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": unique("check"), "source": {"brokers": brokers, "topic": topic},
                                    "sink": sink}, sort_keys=False))
    return spec


def tree(d: Path) -> list:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def iceberg_write(root: Path) -> None:
    sink = iceberg.create({"catalog": catalog(root), "table": TABLE}, SinkContext(pipeline="p", group="g"))
    sink.open()
    sink.write([make_batch([{"id": 1}, {"id": 2}], 0, topic="t")])
    sink.close()


def snapshots(root: Path) -> list:
    return [s.snapshot_id for s in load_catalog("kpipe", **catalog(root)).load_table(TABLE).snapshots()]


def test_check_on_a_writable_warehouse_passes_and_creates_nothing(brokers, topic, tmp_path, modes_bind):
    (tmp_path / "warehouse").mkdir()
    proc = check(write_spec(tmp_path, brokers, topic, {"type": "iceberg", "catalog": catalog(tmp_path), "table": TABLE}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok: sink iceberg: opened; no stored offset for {topic}[0] yet" in proc.stdout.splitlines()
    assert "ok: default batch.max_age: 5m (the iceberg sink's default; the spec does not set it)" \
        in proc.stdout.splitlines(), proc.stdout
    assert tree(tmp_path / "warehouse") == []  # the probe file and the directories it needed are gone
    assert load_catalog("kpipe", **catalog(tmp_path)).list_namespaces() == []


def test_check_on_an_existing_table_adds_no_snapshot_and_no_file(brokers, topic, tmp_path, modes_bind):
    iceberg_write(tmp_path)
    before, files = snapshots(tmp_path), tree(tmp_path / "warehouse")
    proc = check(write_spec(tmp_path, brokers, topic, {"type": "iceberg", "catalog": catalog(tmp_path), "table": TABLE}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (snapshots(tmp_path), tree(tmp_path / "warehouse")) == (before, files)


def test_check_on_a_read_only_warehouse_fails_with_exit_2(brokers, topic, tmp_path, modes_bind):
    (tmp_path / "warehouse").mkdir(mode=0o555)
    proc = check(write_spec(tmp_path, brokers, topic, {"type": "iceberg", "catalog": catalog(tmp_path), "table": TABLE}))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAILED: sink iceberg: iceberg lake.orders: cannot write to file://" in proc.stdout, proc.stdout
    assert "Permission denied" in proc.stdout and "ok: kafka" in proc.stdout


def test_check_on_a_read_only_table_fails_with_exit_2(brokers, topic, tmp_path, modes_bind):
    iceberg_write(tmp_path)
    data = tmp_path / "warehouse" / "lake" / "orders" / "data"
    data.chmod(0o555)
    try:
        proc = check(write_spec(tmp_path, brokers, topic,
                                {"type": "iceberg", "catalog": catalog(tmp_path), "table": TABLE}))
    finally:
        data.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot write to file://{data}/_kpipe_probe_" in proc.stdout, proc.stdout


def test_delta_check_on_a_read_only_table_fails_with_exit_2_not_3(brokers, topic, tmp_path, modes_bind):
    """delta-rs reports a refused local write as a plain OSError, which once read as retryable."""
    from deltalake import write_deltalake
    import pyarrow as pa

    uri = tmp_path / "table"
    write_deltalake(str(uri), pa.table({"id": [1]}))
    uri.chmod(0o555)
    try:
        proc = check(write_spec(tmp_path, brokers, topic, {"type": "delta", "uri": str(uri)}))
    finally:
        uri.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAILED: sink delta: delta: cannot write to" in proc.stdout and "Permission denied" in proc.stdout


def test_an_iceberg_warehouse_in_a_missing_bucket_fails_at_open(moto_server, tmp_path):  # noqa: F811
    config = {"catalog": {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db",
                          "warehouse": "s3://kp-no-such-bucket/warehouse", "s3.endpoint": moto_server.url,
                          "s3.access-key-id": "testing", "s3.secret-access-key": "testing", "s3.region": "us-east-1"},
              "table": TABLE}
    sink = iceberg.create(config, SinkContext(pipeline="p", group="g"))
    with pytest.raises(FatalError, match="cannot write to s3://kp-no-such-bucket/warehouse/lake/orders/data/"):
        sink.open()
