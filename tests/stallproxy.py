"""A TCP proxy on loopback that can stall: forwards bytes both ways until ``stall()``, then
moves none in either direction (nor accepts new connections) while keeping every connection
open, the way a network partition looks to a client whose peer's kernel still acknowledges.
``resume()`` forwards again; ``close()`` (or leaving the ``with`` block, or the ``stall_proxy``
fixture's teardown) stops it and closes everything.

Unlike ``sqlkit.TcpProxy`` (which cuts connections: the client sees a reset at once), a stall
gives the client nothing to react to: only its own timeouts can end the wait.
"""
from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest

__all__ = ["StallProxy", "stall_proxy"]


class StallProxy:
    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.accepted = 0
        self.forwarded = 0  # bytes, both directions
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name=f"stallproxy-{self.port}", daemon=True)
        self.thread.start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not self.closed.is_set():
                if self.stalled.is_set():  # read nothing, accept nothing; connections stay open
                    time.sleep(0.02)
                    continue
                for key, _ in sel.select(0.05):
                    if self.stalled.is_set():
                        break
                    if key.data is None:
                        self._accept(sel)
                    else:
                        self._pump(sel, key.fileobj, key.data)
        finally:
            sel.close()

    def _accept(self, sel) -> None:
        client, _ = self.listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.settimeout(5)  # sendall to a peer that reads is quick; never block the proxy for good
            self.socks.append(s)
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        self.accepted += 1

    def _pump(self, sel, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
            if data:
                dst.sendall(data)
                self.forwarded += len(data)
                return
        except OSError:
            pass
        for s in (src, dst):  # one side closed: close the pair
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "StallProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def stall_proxy():
    """``stall_proxy(host, port)``: a ``StallProxy`` in front of that address, closed after the test."""
    made: list[StallProxy] = []

    def make(host: str, port: int, listen_port: int = 0) -> StallProxy:
        proxy = StallProxy((host, port), listen_port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
