"""systemd's ``Type=notify`` protocol, spoken directly: datagrams of ``KEY=VALUE`` lines to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (in the abstract namespace when it starts with '@').

``SystemdNotifier`` watches a ``Runner`` from a thread of its own and sends:

- ``READY=1`` once, when the run is first ready (``Health.ready``: the group assigned us
  partitions, possibly none, and the sink is reachable);
- ``WATCHDOG=1`` every ``$WATCHDOG_USEC``/2 while the run is alive (``Health.alive``: the loop
  turned within the stall limit). A wedged loop stops the pings, and systemd restarts us;
- ``STATUS=...`` with a short progress line, when it changes (at most every 2 s);
- ``STOPPING=1`` once, as soon as a stop is requested (SIGTERM, SIGINT) or the run ends.

Without ``$NOTIFY_SOCKET`` nothing is sent and no thread runs. A send that fails is logged
once at debug level and never affects the run.

Under the supervisor (many specs, one unit) the children never see ``$NOTIFY_SOCKET``; the
supervisor speaks for them (``SupervisorNotifier``), from the ``ready``/``alive`` flags of
their progress reports: ``READY=1`` once every pipeline is ready, ``WATCHDOG=1`` while every
running pipeline is alive and reporting, ``STOPPING=1`` when it starts to stop them.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from kpipe.ops.health import Health

__all__ = ["Notify", "SystemdNotifier", "SupervisorNotifier"]

log = logging.getLogger("kpipe.ops")


class Notify:
    """A connection-less sender to ``$NOTIFY_SOCKET``."""

    def __init__(self, path: str):
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    @classmethod
    def from_env(cls, env=os.environ) -> "Notify | None":
        path = env.get("NOTIFY_SOCKET")
        return cls(path) if path and (path.startswith("/") or path.startswith("@")) else None

    def send(self, *lines: str) -> bool:
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False

    def close(self) -> None:
        self.sock.close()


def watchdog_interval(env=os.environ) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when the
    watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


class SystemdNotifier:
    TICK = 0.1
    STATUS_EVERY = 2.0

    def __init__(self, runner, health: Health, notify: Notify, watchdog: float | None):
        self.runner = runner
        self.health = health
        self.notify = notify
        self.watchdog = watchdog
        self.ready_sent = self.stopping_sent = False
        self._next_ping = 0.0
        self._next_status = 0.0
        self._status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kpipe-sd-notify", daemon=True)

    @classmethod
    def from_env(cls, runner, health: Health, env=os.environ) -> "SystemdNotifier | None":
        notify = Notify.from_env(env)
        return None if notify is None else cls(runner, health, notify, watchdog_interval(env))

    def start(self) -> "SystemdNotifier":
        self.notify.send(f"STATUS={self.status()}")
        self._thread.start()
        return self

    def close(self) -> None:
        """Say STOPPING=1 if not yet said, and a last STATUS; stop the thread."""
        self._stop.set()
        self._thread.join(5)
        self.step(final=True)
        self.notify.close()

    def _run(self) -> None:
        while not self._stop.wait(self.TICK):
            try:
                self.step()
            except Exception:  # never take the run down with us
                log.debug("sd_notify watcher", exc_info=True)

    def step(self, final: bool = False) -> None:
        runner, r = self.runner, self.runner.result
        now = time.monotonic()
        if not self.ready_sent and not final and self.health.ready()[0]:
            self.ready_sent = True
            self.notify.send("READY=1", f"STATUS={self.status()}")
        if not self.stopping_sent and (final or runner.stop_requested or r.phase in ("stopping", "done")):
            self.stopping_sent = True
            self.notify.send("STOPPING=1", f"STATUS={self.status()}")
        if self.watchdog and not final and now >= self._next_ping and self.health.alive()[0]:
            self._next_ping = now + self.watchdog
            self.notify.send("WATCHDOG=1")
        if final or now >= self._next_status:
            self._next_status = now + self.STATUS_EVERY
            status = self.status()
            if status != self._status:
                self._status = status
                self.notify.send(f"STATUS={status}")

    def status(self) -> str:
        """One short line: phase, partitions, totals, lag."""
        r = self.runner.result
        if r.phase == "done":
            head = "done" if r.exit_code == 0 else f"failed (exit {r.exit_code}): {r.reason}"[:200]
        elif self.runner.stop_requested and r.phase != "starting":
            head = "stopping: draining"
        else:
            head = r.phase
        known = [v for v in r.lag().values() if v is not None]
        parts = [head, f"{len(r.assigned)} partitions", f"consumed {r.consumed}", f"written {r.written}"]
        if known:
            parts.append(f"lag {sum(known)}")
        if r.skipped or r.dead_lettered:
            parts.append(f"bad {r.skipped + r.dead_lettered}")
        return ", ".join(parts)


class SupervisorNotifier:
    """systemd notifications for a whole supervisor, stepped from its loop.

    ``children`` have ``proc`` (None when not running), ``final`` (never started again),
    ``started_at`` (monotonic) and ``latest`` (their last progress record, None since the
    last start). A child between restarts does not hold the pings back: the supervisor is
    handling it. A running child whose loop is wedged (``alive`` false), or whose reports
    stopped for ``SILENT`` seconds, does: systemd then restarts the unit, as it would restart
    a lone wedged ``kpipe run``.
    """

    SILENT = 10.0          # seconds without a report from a running child: it is wedged
    STATUS_EVERY = 2.0

    def __init__(self, notify: Notify, watchdog: float | None):
        self.notify = notify
        self.watchdog = watchdog
        self.ready_sent = self.stopping_sent = False
        self._next_ping = self._next_status = 0.0
        self._status = ""

    @classmethod
    def from_env(cls, env=os.environ) -> "SupervisorNotifier | None":
        notify = Notify.from_env(env)
        return None if notify is None else cls(notify, watchdog_interval(env))

    def step(self, children, stopping: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        wall = time.time()
        running = [c for c in children if c.proc is not None]
        pending = [c for c in children if not c.final]  # done or given up: not waited for
        if not self.ready_sent and not stopping and pending \
                and all(c.proc is not None and (c.latest or {}).get("ready") for c in pending):
            self.ready_sent = True
            self.notify.send("READY=1", f"STATUS={self.status(children)}")
        if stopping and not self.stopping_sent:
            self.stopping_sent = True
            self.notify.send("STOPPING=1", f"STATUS={self.status(children)}")
        if self.watchdog and now >= self._next_ping and all(self._alive(c, now, wall) for c in running):
            self._next_ping = now + self.watchdog
            self.notify.send("WATCHDOG=1")
        if now >= self._next_status:
            self._next_status = now + self.STATUS_EVERY
            status = self.status(children)
            if status != self._status:
                self._status = status
                self.notify.send(f"STATUS={status}")

    def _alive(self, child, now: float, wall: float) -> bool:
        rec = child.latest
        if rec is None:  # not reported yet: give it SILENT seconds from its start
            return now - child.started_at < self.SILENT
        return rec.get("alive", True) is not False and wall - rec.get("t", wall) < self.SILENT

    def status(self, children) -> str:
        recs = [c.latest for c in children if c.latest]
        ready = sum(1 for r in recs if r.get("ready"))
        consumed = sum(r.get("consumed") or 0 for r in recs)
        written = sum(r.get("written") or 0 for r in recs)
        return f"{ready}/{len(children)} pipelines ready, consumed {consumed}, written {written}"

    def close(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.notify.send("STOPPING=1")
        self.notify.close()
