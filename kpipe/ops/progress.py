"""Progress of running pipelines: a live line per pipeline on a terminal, periodic log lines
elsewhere.

One record per pipeline and report, a flat JSON-able dict (``snapshot``): the same shape
whether it comes from a ``Runner`` in this process or, one JSON line a second, from a child
of the supervisor through the pipe named by ``KPIPE_PROGRESS_FD``::

    {"name": "orders", "t": 1700000000.0, "phase": "running", "consumed": 1200, "written": 1180,
     "lag": 340, "remaining": 340, "until_caught_up": true, "group": "orders"}

``lag`` sums end offset minus committed position over the partitions this member holds
(None until known); ``remaining`` (``--until-caught-up`` only) sums what is left to the end
offsets recorded at start. ``Tracker`` turns successive records into a rate, a fraction done
and an ETA; ``TtyDisplay`` and ``LogDisplay`` render them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

__all__ = ["snapshot", "Tracker", "TtyDisplay", "LogDisplay", "Watcher", "ChildReporter",
           "PROGRESS_FD_ENV", "make_display", "format_line", "attach", "route_logs", "unroute_logs"]

PROGRESS_FD_ENV = "KPIPE_PROGRESS_FD"
TTY_INTERVAL = 0.25  # at most four redraws a second
BAR_WIDTH = 20

log = logging.getLogger("kpipe.progress")


def snapshot(name: str, result, until_caught_up: bool, group: str | None = None) -> dict:
    """The progress record of a run, from its ``RunResult`` (read from another thread; a
    value one update old is fine, a dict changing size under us is retried)."""
    for _ in range(3):
        try:
            lags = [v for v in result.lag().values() if v is not None]
            remaining = None
            if until_caught_up and result.targets:
                committed, positions = dict(result.committed), dict(result.positions)
                remaining = 0
                for tp, target in dict(result.targets).items():
                    # Partitions we hold, or held (their last commit stays known): the final
                    # record of a run that failed must not read as done.
                    if tp in result.assigned or tp in committed:
                        done = committed.get(tp, positions.get(tp))
                        remaining += max(0, target - done) if done is not None else target
            break
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    else:
        lags, remaining = [], None
    return {"name": name, "t": time.time(), "phase": result.phase, "consumed": result.consumed,
            "written": result.written, "lag": sum(lags) if lags else None,
            "assigned": len(result.assigned), "remaining": remaining, "until_caught_up": until_caught_up,
            "group": group}


def _group_of(runner) -> str | None:
    return getattr(getattr(runner, "spec", None), "group", None)


class Tracker:
    """Successive records of one pipeline -> rate (msg/s), fraction done, ETA."""

    def __init__(self, name: str):
        self.name = name
        self.last: dict | None = None
        self.rate = 0.0           # consumed messages per second, smoothed
        self.drain = 0.0          # offsets of `remaining` worked off per second, smoothed
        self.baseline = 0         # the largest `remaining` seen: 0% of the bar
        self.state = ""           # set by the supervisor: "restarting in 4s", "exited 2", ...
        self.waiting_since: float | None = None  # the first record with no partition yet

    def update(self, rec: dict) -> None:
        prev, self.last = self.last, rec
        if rec.get("assigned") or rec.get("phase") not in ("starting", "running"):
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = rec["t"]
        if rec.get("remaining") is not None:
            self.baseline = max(self.baseline, rec["remaining"])
        if prev is None:
            return
        dt = rec["t"] - prev["t"]
        if dt <= 0:
            return
        alpha = min(1.0, dt / 3.0)  # ~3 s of smoothing
        inst = max(0, rec["consumed"] - prev["consumed"]) / dt
        self.rate += alpha * (inst - self.rate)
        if rec.get("remaining") is not None and prev.get("remaining") is not None:
            worked = max(0, prev["remaining"] - rec["remaining"]) / dt
            self.drain += alpha * (worked - self.drain)

    def fraction(self) -> float | None:
        rec = self.last
        if rec is None or rec.get("remaining") is None:
            return None
        if self.baseline == 0:
            # Nothing was seen left to read: done once assigned, or once the run ended having
            # written something (a small drain ends between two samples).
            return 1.0 if rec.get("assigned") or (rec.get("phase") == "done" and rec.get("written")) else 0.0
        return 1.0 - rec["remaining"] / self.baseline

    def eta(self) -> float | None:
        rec = self.last
        if rec is None or rec.get("remaining") is None:
            return None
        if rec["remaining"] == 0:
            return 0.0
        return rec["remaining"] / self.drain if self.drain > 0 else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_line(tr: Tracker, bar: bool, width: int = 0) -> str:
    """One pipeline's line: ``orders  1,234 msg/s  lag 5,000  [#####-----]  45%  ETA 12s``."""
    rec = tr.last or {}
    parts = [f"{tr.name:{width}}"]
    if tr.state:
        parts.append(tr.state)
    if rec and tr.waiting_since is not None and not tr.state:
        # No partition yet: a lag or an ETA would be a guess ("lag ?", "ETA 0s").
        group = f"group {rec['group']}, " if rec.get("group") else ""
        parts.append(f"waiting for partitions ({group}{int(rec['t'] - tr.waiting_since)} s)")
    elif rec:
        parts.append(f"{tr.rate:,.0f} msg/s")
        lag = rec.get("lag")
        parts.append(f"lag {lag:,}" if lag is not None else "lag ?")
        parts.append(f"written {rec.get('written', 0):,}")
        frac = tr.fraction()
        if frac is not None:
            if bar:
                filled = int(round(frac * BAR_WIDTH))
                parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
            parts.append(f"{frac * 100:3.0f}%")
            parts.append(f"ETA {_duration(tr.eta())}")
        elif rec.get("phase") not in (None, "running"):
            parts.append(rec["phase"])
    elif not tr.state:
        parts.append("starting")
    return "  ".join(parts)


class TtyDisplay:
    """Live lines at the bottom of a terminal, redrawn in place. Everything else written to
    the terminal goes through ``write`` so it lands above them and they are drawn again."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.RLock()
        self.trackers: dict[str, Tracker] = {}
        self.drawn = 0      # lines of ours on screen below the cursor's line start
        self.last_draw = 0.0

    def tracker(self, name: str) -> Tracker:
        with self.lock:
            return self.trackers.setdefault(name, Tracker(name))

    def _clear(self) -> None:
        if self.drawn:
            # Up to the first of our lines, then clear to the end of the screen.
            self.stream.write("\r" + (f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else "") + "\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        trackers = list(self.trackers.values())
        if not trackers:
            return
        width = max(len(t.name) for t in trackers)
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 200  # a terminal that does not say its size (a bare pty) says 0
        # A line that wraps would throw off the cursor-up count of the next redraw.
        lines = [format_line(t, bar=True, width=width)[:max(10, columns - 1)] for t in trackers]
        self.stream.write("\n".join(lines))
        self.drawn = len(lines)
        self.stream.flush()
        self.last_draw = time.monotonic()

    def render(self, force: bool = False) -> None:
        with self.lock:
            if not force and time.monotonic() - self.last_draw < TTY_INTERVAL:
                return
            self._clear()
            self._draw()

    def write(self, text: str) -> None:
        with self.lock:
            self._clear()
            self.stream.write(text)
            if text and not text.endswith("\n"):
                self.stream.write("\n")
            self._draw()

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        with self.lock:
            self._clear()
            self._draw()  # leave the final figures on screen
            if self.drawn:
                self.stream.write("\n")
            self.drawn = 0
            self.stream.flush()


class LogDisplay:
    """Off a terminal: one plain log line per pipeline every ``interval`` seconds."""

    def __init__(self, stream, interval: float):
        self.stream = stream
        self.interval = interval
        self.lock = threading.RLock()
        self.trackers: dict[str, Tracker] = {}
        self.last_draw = time.monotonic()

    def tracker(self, name: str) -> Tracker:
        with self.lock:
            return self.trackers.setdefault(name, Tracker(name))

    def render(self, force: bool = False) -> None:
        with self.lock:
            if not force and time.monotonic() - self.last_draw < self.interval:
                return
            self.last_draw = time.monotonic()
            for t in list(self.trackers.values()):
                log.info("progress %s", format_line(t, bar=False))

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        pass


def make_display(stream, interval: float):
    """``TtyDisplay`` when ``stream`` is a terminal, else ``LogDisplay``."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return TtyDisplay(stream) if tty else LogDisplay(stream, interval)


class _LogStream:
    """A file-like object for logging handlers that writes through a ``TtyDisplay``."""

    def __init__(self, display: TtyDisplay):
        self.display = display

    def write(self, text: str) -> None:
        if text:
            self.display.write(text)

    def flush(self) -> None:
        self.display.flush()


def route_logs(display, stream) -> list:
    """Point the ``kpipe`` logger's handlers that write to ``stream`` at ``display``, so log
    lines land above the live lines; returns what to hand to ``unroute_logs``."""
    if not isinstance(display, TtyDisplay):
        return []
    swapped = []
    for h in logging.getLogger("kpipe").handlers:
        if isinstance(h, logging.StreamHandler) and h.stream is stream:
            h.setStream(_LogStream(display))
            swapped.append(h)
    return swapped


def unroute_logs(swapped: list, stream) -> None:
    for h in swapped:
        h.setStream(stream)


class Watcher(threading.Thread):
    """In-process: reads a ``Runner``'s result from its own thread and renders it, or reports
    it to the supervisor when ``KPIPE_PROGRESS_FD`` is set (see ``ChildReporter``)."""

    def __init__(self, name: str, runner, until_caught_up: bool, display):
        super().__init__(name="kpipe-progress", daemon=True)
        self.runner, self.until_caught_up, self.display = runner, until_caught_up, display
        self.pipeline = name
        self.stop_event = threading.Event()
        self.tick = TTY_INTERVAL if isinstance(display, TtyDisplay) else min(1.0, display.interval)

    def _update(self) -> None:
        self.display.tracker(self.pipeline).update(
            snapshot(self.pipeline, self.runner.result, self.until_caught_up, _group_of(self.runner)))

    def run(self) -> None:
        while not self.stop_event.wait(self.tick):
            self._update()
            self.display.render()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self._update()
        self.display.close()


class ChildReporter(threading.Thread):
    """In a supervised child: one JSON progress record a second to the supervisor's pipe.

    The pipe doubles as a lifeline: when the supervisor is gone (a write fails with EPIPE),
    the child stops as if it had been sent SIGTERM, so no pipeline outlives its supervisor.
    """

    def __init__(self, fd: int, name: str, runner, until_caught_up: bool, interval: float = 1.0,
                 health=None):
        super().__init__(name="kpipe-progress-report", daemon=True)
        self.out = os.fdopen(fd, "w", buffering=1)
        self.pipeline, self.runner, self.until_caught_up = name, runner, until_caught_up
        self.interval = interval
        self.health = health
        self.stop_event = threading.Event()

    def _send(self) -> bool:
        record = snapshot(self.pipeline, self.runner.result, self.until_caught_up, _group_of(self.runner))
        if self.health is not None:  # the same rules as the child's own /readyz and /healthz
            record["ready"] = self.health.ready()[0]
            record["alive"] = self.health.alive()[0]
        try:
            self.out.write(json.dumps(record) + "\n")
            return True
        except (BrokenPipeError, ValueError, OSError):
            return False

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            if not self._send():
                log.warning("the supervisor is gone; stopping")
                self.runner.request_stop()
                return

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self._send()  # the final figures
        try:
            self.out.close()
        except OSError:
            pass


def attach(runner, name: str, until_caught_up: bool, enabled: bool, interval: float, stream=None,
           health=None):
    """Start progress for one in-process run; returns the function that stops it.

    Under the supervisor (``KPIPE_PROGRESS_FD`` set) the run reports to it instead, whatever
    ``enabled`` says: the pipe is also the child's lifeline. With ``health`` (a ``Health``),
    the reports also say whether the run is ready and alive, for the supervisor's systemd
    notifications.
    """
    stream = sys.stderr if stream is None else stream
    fd = os.environ.pop(PROGRESS_FD_ENV, None)
    if fd is not None:
        try:
            reporter = ChildReporter(int(fd), name, runner, until_caught_up, health=health)
        except (ValueError, OSError) as exc:
            log.warning("%s=%s is not a usable file descriptor (%s); not reporting progress",
                        PROGRESS_FD_ENV, fd, exc)
        else:
            reporter.start()
            return reporter.stop
    if not enabled:
        return lambda: None
    display = make_display(stream, interval)
    swapped = route_logs(display, stream)
    watcher = Watcher(name, runner, until_caught_up, display)
    watcher.start()

    def stop() -> None:
        watcher.stop()
        unroute_logs(swapped, stream)

    return stop
