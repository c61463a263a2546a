"""The files sink's output going wrong (defect 6): every OS error of the output directory is one
clear line naming the path and the error, and exit 2; never "internal error" with a traceback.

The tests run as root, and root ignores permission bits (CAP_DAC_OVERRIDE), so a chmod 0o555
directory is writable to it. Two ways make an output unwritable for root all the same:

- paths that cannot be made whatever the permissions: a partition directory whose path runs
  through a regular file (NotADirectoryError), a ``.lock`` that is a directory (IsADirectoryError);
- for a really read-only directory (0o555), the kpipe process runs under
  ``setpriv --bounding-set -dac_override,-dac_read_search``: root without those capabilities
  is held to permission bits like any user (skipped when setpriv is missing).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import write_spec
from kit import ROOT, produce_events
from kpipe.api import Batch, FatalError, SinkContext
from kpipe.sinks.files.sink import FilesSink

CTX = SinkContext(pipeline="p", group="g")
TP = ("orders", 0)


def batch(start: int, n: int) -> Batch:
    return Batch("orders", 0, start, start + n, [{"i": start + k} for k in range(n)], [])


def opened(path) -> FilesSink:
    s = FilesSink({"path": str(path), "format": "jsonl"}, CTX)
    s.open()
    return s


def no_dac(cmd: list) -> list:
    """``cmd`` run by a root that permission bits apply to (as is, for another user)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be made read-only")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


# -- the sink itself: each OS error path is a FatalError naming the path ----------------------


def test_an_output_path_under_a_file_fails_at_open(tmp_path):
    (tmp_path / "file").write_text("")
    s = FilesSink({"path": str(tmp_path / "file" / "out"), "format": "jsonl"}, CTX)
    with pytest.raises(FatalError, match=r"cannot create output directory .*/file/out"):
        s.open()


def test_a_partition_directory_under_a_file_is_a_fatal_error(tmp_path):
    s = opened(tmp_path / "out")
    (tmp_path / "out" / "orders").write_text("not a directory")
    for call in (lambda: s.load_offsets([TP]), lambda: s.write([batch(0, 3)])):
        with pytest.raises(FatalError) as info:
            call()
        assert str(info.value).startswith(f"files sink: cannot create the partition directory {tmp_path}/out/orders")
        assert "Not a directory" in str(info.value) or "File exists" in str(info.value), str(info.value)


def test_a_lock_file_that_cannot_be_opened_is_a_fatal_error(tmp_path):
    s = opened(tmp_path / "out")
    (tmp_path / "out" / "orders" / "0" / ".lock").mkdir(parents=True)  # O_RDWR on a directory: EISDIR
    for call in (lambda: s.load_offsets([TP]), lambda: s.write([batch(0, 3)])):
        with pytest.raises(FatalError) as info:
            call()
        assert str(info.value) == (f"files sink: cannot open the lock file {tmp_path}/out/orders/0/.lock: "
                                   "Is a directory")
    assert not list((tmp_path / "out" / "orders" / "0").glob("*.jsonl"))


def test_a_file_that_cannot_be_published_is_a_fatal_error(tmp_path):
    s = opened(tmp_path / "out")
    s.load_offsets([TP])
    d = tmp_path / "out" / "orders" / "0"
    (d / ".next").mkdir()  # where an all-filtered batch's end goes: the rename onto it fails
    with pytest.raises(FatalError) as info:
        s.write([Batch("orders", 0, 0, 5, [], [])])
    assert str(info.value) == f"files sink: cannot write {d}/.next: Is a directory"
    assert sorted(p.name for p in d.iterdir()) == [".lock", ".next"]  # its temp file removed


def test_a_leftover_that_cannot_be_removed_is_a_fatal_error(tmp_path):
    s = opened(tmp_path / "out")
    s.load_offsets([TP])
    leftover = tmp_path / "out" / "orders" / "0" / ".orders+0+1+2.jsonl.1.tmp"
    leftover.mkdir()  # unlink on a directory: EISDIR
    with pytest.raises(FatalError) as info:
        s.write([batch(0, 3)])
    assert str(info.value) == f"files sink: cannot remove the leftover temp file {leftover}: Is a directory"


def test_a_read_only_partition_directory_is_a_fatal_error(tmp_path):
    """In a process that permission bits apply to, also as root."""
    out = tmp_path / "out"
    (out / "orders" / "0").mkdir(parents=True)
    (out / "orders" / "0").chmod(0o555)
    code = ("import sys; from kpipe.api import FatalError, SinkContext; "
            "from kpipe.sinks.files.sink import FilesSink\n"
            f"s = FilesSink({{'path': {str(out)!r}, 'format': 'jsonl'}}, SinkContext('p', 'g')); s.open()\n"
            "try:\n    s.load_offsets([('orders', 0)])\n"
            "except FatalError as exc:\n    print(exc); sys.exit(2)\n")
    proc = subprocess.run(no_dac([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip() == f"files sink: cannot open the lock file {out}/orders/0/.lock: Permission denied"


# -- through the CLI: one line, exit 2 ----------------------------------------------------------


def run(spec, *, drop_dac: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kpipe", "run", str(spec), "--until-caught-up", "--no-progress"]
    return subprocess.run(no_dac(cmd) if drop_dac else cmd, capture_output=True, text=True, timeout=120,
                          cwd=ROOT, stdin=subprocess.DEVNULL)


def assert_one_clear_line(proc, *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if all(n in line for n in needles)]
    assert lines, f"no line names {needles}:\n{err[-3000:]}"


@pytest.mark.parametrize("how", ["read-only output directory", "read-only partition directories",
                                 "a topic directory that is a file", "lock files that are directories"])
def test_an_unwritable_output_is_one_line_and_exit_2(brokers, topic, tmp_path, how):
    produce_events(brokers, topic, 8)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, max_records=100, max_age="200ms")
    parts = [out / topic / str(p) for p in range(4)]
    drop_dac = how.startswith("read-only")
    if how == "read-only output directory":
        out.mkdir()
        out.chmod(0o555)
        needles = (str(out), "not writable")
    elif how == "read-only partition directories":
        for d in parts:
            d.mkdir(parents=True)
            d.chmod(0o555)
        needles = ("files sink: cannot open the lock file", f"{out}/{topic}/", "Permission denied")
    elif how == "a topic directory that is a file":
        out.mkdir()
        (out / topic).write_text("")
        needles = (f"files sink: cannot create the partition directory {out}/{topic}",)
    else:
        for d in parts:
            (d / ".lock").mkdir(parents=True)
        needles = ("files sink: cannot open the lock file", f"{out}/{topic}/", "Is a directory")
    proc = run(spec, drop_dac=drop_dac)
    assert_one_clear_line(proc, *needles)
