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
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from kpipe.ops.health import Health

__all__ = ["Notify", "SystemdNotifier"]

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
