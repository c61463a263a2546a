"""Many pipelines in one command: each in a child process (``python -m kpipe run SPEC ...``)
under one supervisor.

- Replicas (``--replicas N``, ``kpipe.ops.replicas``): N children per spec, members of its
  consumer group named ``NAME/0`` ... ``NAME/N-1``; each is a pipeline to every rule below.

- Children run in sessions of their own, so a Ctrl-C at the terminal reaches only the
  supervisor, which forwards exactly one SIGTERM to each (two would skip their drain).
- Restart policy (``--restart``): ``no``; ``on-failure`` (default) restarts a child that
  exited 2 or 3 or died of a signal; ``always`` also restarts one that exited 1 in a
  long-running run (the spec is read again at each start, so fixing the file brings it back).
  A child that exited 0 is never restarted, nor, with ``--until-caught-up`` or
  ``--max-messages``, one that exited 1. Waits between restarts double from 1 s up to 30 s;
  after ``--max-restarts`` restarts in a row the pipeline is given up, its exit code counts,
  and in a long-running run the supervisor then stops the others and exits, so that systemd
  or Kubernetes sees the failure. A child that ran for 60 s before dying starts a fresh count.
- Signals: the first SIGTERM/SIGINT forwards SIGTERM to every child (they drain, commit, exit
  0) and cancels pending restarts; a second forwards SIGTERM again (children skip their drain,
  as a lone ``kpipe run`` does on a second signal; nothing is lost, it is read again next
  time); a third sends SIGKILL. The supervisor exits once every child has exited.
- Exit code: the worst of the pipelines' by severity 2 > 3 > 1 > 0 (``worst``); a child
  killed by a signal counts as 2.
- Each line a child writes to stderr is passed through prefixed with ``[pipeline] ``.
- systemd: the children never see ``$NOTIFY_SOCKET``; the supervisor sends ``READY=1``,
  ``WATCHDOG=1`` and ``STOPPING=1`` for all of them (``kpipe.ops.systemd.SupervisorNotifier``).
- Progress: each child writes a JSON record a second to the pipe named by
  ``KPIPE_PROGRESS_FD`` (``kpipe.ops.progress``); the supervisor renders one line per pipeline.
  The pipe is also the child's lifeline: if the supervisor dies, the child's next write fails
  and it stops by itself.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from kpipe.ops.progress import PROGRESS_FD_ENV, LogDisplay, TtyDisplay
from kpipe.ops.systemd import SupervisorNotifier

__all__ = ["Supervisor", "worst", "should_restart", "restart_delay", "SEVERITY", "expand_specs"]

log = logging.getLogger("kpipe.supervisor")

SEVERITY = {0: 0, 1: 1, 3: 2, 2: 3}  # exit code -> rank; the highest rank is the outcome
BACKOFF_BASE, BACKOFF_CAP = 1.0, 30.0
HEALTHY_RUN = 60.0  # seconds a child must run before its restart count starts afresh


def normalize(rc: int) -> int:
    """A child's return code as a kpipe exit code: death by a signal (negative) is 2."""
    return rc if rc in SEVERITY else 2


def worst(codes) -> int:
    """The most severe exit code of ``codes`` (0 for none): 2 > 3 > 1 > 0."""
    return max((normalize(c) for c in codes), key=SEVERITY.__getitem__, default=0)


def should_restart(policy: str, rc: int, bounded: bool) -> bool:
    """Whether a child that exited with ``rc`` is started again. ``bounded``: the run has an
    end of its own (``--until-caught-up`` or ``--max-messages``)."""
    if policy == "no" or rc == 0:
        return False
    if rc == 1:
        return policy == "always" and not bounded
    return True


def restart_delay(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts + 1``: 1, 2, 4, ... capped at 30."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** restarts)


def expand_specs(paths) -> list[str] | None:
    """Spec files from the command line: a directory stands for every ``*.yaml``/``*.yml`` in
    it, sorted. Prints the problem and returns None when a directory has none."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.endswith((".yaml", ".yml")) and not f.startswith("."))
            if not found:
                print(f"{path}: no *.yaml spec files in this directory", file=sys.stderr)
                return None
            out += found
        else:
            out.append(path)
    return out


_SYSTEMD_ENV = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


class Child:
    """One pipeline under the supervisor, across its restarts."""

    def __init__(self, name: str, spec_path: str, extra_args: tuple = ()):
        self.name = name
        self.spec_path = spec_path
        self.extra_args = list(extra_args)  # this pipeline's own options (its metrics port)
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.started_at = 0.0
        self.restarts = 0            # in a row
        self.next_start: float | None = 0.0  # monotonic time to (re)start at; None: not again
        self.exit_code: int | None = None    # the last exit, normalized
        self.final = False           # done or given up: never started again
        self.latest: dict | None = None  # its last progress record since its last start
        self.threads: list[threading.Thread] = []


class Supervisor:
    def __init__(self, pipelines: list[tuple[str, str]], child_args: list[str], *, restart: str = "on-failure",
                 max_restarts: int = 5, bounded: bool = False, display=None, stream=None):
        self.children = [Child(*p) for p in pipelines]  # (name, spec path[, extra args])
        self.child_args = list(child_args)
        self.policy = restart
        self.max_restarts = max_restarts
        self.bounded = bounded
        self.display = display
        self.stream = stream if stream is not None else sys.stderr
        self.out_lock = threading.Lock()
        self.signals = 0
        self.forwarded = 0
        self.stopping = False
        self.systemd = SupervisorNotifier.from_env()

    # -- output --------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        if isinstance(self.display, TtyDisplay):
            self.display.write(text)
        else:
            with self.out_lock:
                self.stream.write(text)
                self.stream.flush()

    def _pump_stderr(self, child: Child, pipe) -> None:
        prefix = f"[{child.name}] "
        for raw in iter(pipe.readline, b""):
            self._emit(prefix + raw.decode(errors="replace").rstrip("\n") + "\n")
        pipe.close()

    def _pump_progress(self, child: Child, fd: int) -> None:
        tracker = self.display.tracker(child.name) if self.display is not None else None
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                try:
                    record = json.loads(raw)
                    child.latest = record
                    if tracker is not None:
                        tracker.update(record)
                except (ValueError, KeyError, TypeError):
                    continue

    def _state(self, child: Child, text: str) -> None:
        if self.display is not None:
            self.display.tracker(child.name).state = text

    # -- children ------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        read_fd, write_fd = os.pipe()
        # systemd talks to the supervisor only (NotifyAccess=main): a child must not claim
        # readiness or feed the watchdog for all of them.
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
        env[PROGRESS_FD_ENV] = str(write_fd)
        cmd = [sys.executable, "-m", "kpipe", "run", child.spec_path, *self.child_args, *child.extra_args]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                    pass_fds=(write_fd,), start_new_session=True)
        finally:
            os.close(write_fd)
        child.proc, child.pid = proc, proc.pid
        child.latest = None
        child.started_at = time.monotonic()
        child.next_start = None
        child.threads = [threading.Thread(target=self._pump_stderr, args=(child, proc.stderr), daemon=True),
                         threading.Thread(target=self._pump_progress, args=(child, read_fd), daemon=True)]
        for t in child.threads:
            t.start()
        self._state(child, f"pid {proc.pid}")
        log.info("started %s (pid %d): %s", child.name, proc.pid, child.spec_path)

    def _exited(self, child: Child, rc: int) -> None:
        for t in child.threads:
            t.join(5)  # the child's last lines come before our verdict on it
        child.proc = None
        code = normalize(rc)
        child.exit_code = code
        how = f"exit {rc}" if rc >= 0 else f"killed by {signal.Signals(-rc).name}"
        ran = time.monotonic() - child.started_at
        if ran >= HEALTHY_RUN:
            child.restarts = 0
        if self.stopping or not should_restart(self.policy, rc, self.bounded):
            child.final = True
            (log.info if code == 0 else log.error)("%s (pid %d) finished: %s", child.name, child.pid, how)
            self._state(child, "done" if code == 0 else f"failed ({how})")
            return
        if child.restarts >= self.max_restarts:
            child.final = True
            log.error("%s (pid %d): %s; giving up after %d restarts (--max-restarts)", child.name, child.pid,
                      how, child.restarts)
            self._state(child, f"gave up ({how})")
            if not self.bounded:
                log.error("a pipeline was given up; stopping the others")
                self._stop_all()
            return
        delay = restart_delay(child.restarts)
        child.restarts += 1
        child.next_start = time.monotonic() + delay
        log.warning("%s (pid %d): %s; restart %d/%d in %.0fs", child.name, child.pid, how, child.restarts,
                    self.max_restarts, delay)
        self._state(child, f"{how}; restart {child.restarts}/{self.max_restarts} in {delay:.0f}s")

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def _stop_all(self) -> None:
        self.stopping = True
        for child in self.children:
            if child.proc is None and not child.final:
                child.final, child.next_start = True, None  # a pending restart: not any more

    def _forward(self) -> None:
        while self.forwarded < self.signals:
            self.forwarded += 1
            if self.forwarded == 1:
                log.info("stopping: forwarding SIGTERM to every pipeline (they drain and commit; "
                         "signal again to skip the drain)")
                self._stop_all()
            sig = signal.SIGKILL if self.forwarded >= 3 else signal.SIGTERM
            self._send_all(sig)

    def _send_all(self, sig) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self.systemd is not None:
                self.systemd.close()
            if self.display is not None:
                self.display.close()

    def _loop(self) -> int:
        sent_stop = False
        while True:
            self._forward()
            if self.stopping and not sent_stop:
                # Stopping for a reason other than a signal (a pipeline given up).
                sent_stop = True
                if self.forwarded == 0:
                    self._send_all(signal.SIGTERM)
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None:
                    rc = child.proc.poll()
                    if rc is not None:
                        self._exited(child, rc)
                if child.proc is None and not child.final and child.next_start is not None \
                        and now >= child.next_start and not self.stopping:
                    self._start(child)
            if self.systemd is not None:
                self.systemd.step(self.children, self.stopping or self.signals > 0, now)
            if all(c.final and c.proc is None for c in self.children):
                break
            if self.display is not None:
                self.display.render()
            time.sleep(0.05)
        code = worst(c.exit_code for c in self.children if c.exit_code is not None)
        if isinstance(self.display, LogDisplay):
            self.display.render(force=True)
        summary = ", ".join(f"{c.name} {c.exit_code}" for c in self.children)
        (log.info if code == 0 else log.error)("all pipelines finished (exit codes: %s); exit %d", summary, code)
        return code
