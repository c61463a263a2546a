"""Progress: plain periodic log lines off a terminal, a live bar on one (a real pseudo-terminal)."""
from __future__ import annotations

import os
import re
import pty
import subprocess
import threading

import pytest

from conftest import assert_exactly_once, write_spec
from kit import ROOT, FAST_SESSION, Proc, kpipe_cmd, produce_events, seal_events, stop_cleanly, unique, wait_for
from kpipe.kafka_admin import create_topic


def test_off_a_tty_progress_is_periodic_plain_lines(brokers, topic, tmp_path):
    produce_events(brokers, topic, 1000)
    spec = write_spec(tmp_path, brokers, topic, tmp_path / "out", name=unique("plain"), max_age="300ms",
                      options=FAST_SESSION)
    proc = Proc(tmp_path / "logs", "run", "run", str(spec), "--progress-interval", "0.5")
    try:
        wait_for(lambda: proc.stderr().count("kpipe.progress: progress") >= 3
                 and "written 1,000" in proc.stderr(), 30, "three progress lines", [proc], interval=0.1)
        stop_cleanly(proc)
    finally:
        proc.kill()
    err = proc.stderr()
    assert "\x1b" not in err and "\r" not in err
    line = [x for x in err.splitlines() if "written 1,000" in x][0]
    assert "msg/s" in line and "lag 0" in line, line
    quiet = Proc(tmp_path / "logs", "quiet", "run", str(spec), "--progress-interval", "0.2", "--no-progress")
    try:
        wait_for(lambda: "assigned" in quiet.stderr(), 30, "the assignment", [quiet])
        stop_cleanly(quiet)
    finally:
        quiet.kill()
    assert "kpipe.progress" not in quiet.stderr()


def run_on_pty(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run kpipe with stderr on a pseudo-terminal; (exit code, everything it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(kpipe_cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, cwd=ROOT)
    os.close(slave)
    chunks: list[bytes] = []

    def pump():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout)
    finally:
        proc.kill()
        reader.join(5)
        os.close(master)
    return rc, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("how", ["one", "supervised"])
def test_on_a_tty_a_bar_to_the_end_offsets_is_drawn_in_place(brokers, topic, tmp_path, how):
    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 2000)))
    names = [unique("tty-a")]
    specs = [write_spec(tmp_path, brokers, topic, tmp_path / "a", name=names[0], max_records=200,
                        options=FAST_SESSION, filename="a.yaml")]
    if how == "supervised":
        topic2 = topic + "-2"
        create_topic(brokers, topic2, 4)
        seal_events(brokers, topic2, len(produce_events(brokers, topic2, 400)))
        names.append(unique("tty-b"))
        specs.append(write_spec(tmp_path, brokers, topic2, tmp_path / "b", name=names[1], options=FAST_SESSION,
                                filename="b.yaml"))
    rc, screen = run_on_pty("run", *map(str, specs), "--until-caught-up")
    assert rc == 0, screen
    assert "\r\x1b[J" in screen  # redrawn in place
    if how == "supervised":
        assert "\x1b[1A" in screen  # two lines: up one to redraw both
    for name in names:
        plain = re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", screen.replace("\r", "\n"))
        final = [line for line in plain.splitlines() if line.startswith(name)]
        assert final, screen[-2000:]
        assert "[" + "#" * 20 + "]" in final[-1] and "100%" in final[-1] and "ETA 0s" in final[-1], final[-1]
        assert "msg/s" in final[-1] and "lag " in final[-1]
    assert_exactly_once(tmp_path / "a", produced)
