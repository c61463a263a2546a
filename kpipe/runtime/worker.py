"""The sink's thread: runs submitted calls one at a time, in order, on one daemon thread.

Not a ``ThreadPoolExecutor``: the interpreter joins those threads at exit, so a sink call
stuck in a socket read (a database that stopped answering) would keep the process alive
after the runner had given up on it and SIGTERM could not end the run. A daemon thread is
abandoned at exit instead; the runner commits nothing for a call it gave up on.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

__all__ = ["Worker"]


class Worker:
    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # When the call (or retry attempt) now running started; None when idle or between
        # attempts. Read by the runner to tell a stalled dependency from a slow one.
        self.busy_since: float | None = None
        self._thread.start()

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        self._calls.put((fut, fn, args))
        return fut

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            self.busy_since = time.monotonic()
            try:
                result = fn(*args)
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                self.busy_since = None
            del fut, fn, args, item

    def shutdown(self, wait: bool = True) -> None:
        self._calls.put(None)
        if wait:
            self._thread.join()
