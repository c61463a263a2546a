"""``kpipe demo``: the quickstart end to end on the bundled broker, then a look at what landed."""
from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

__all__ = ["demo", "sample_orders", "QUICKSTART"]

QUICKSTART = Path(__file__).resolve().parent.parent / "pipelines" / "quickstart.yaml"
PARTITIONS = 4


def sample_orders(n: int, seed: int = 7):
    """Deterministic sample order events as ``(key, value)`` byte pairs."""
    rnd = random.Random(seed)
    countries = ["DE", "FR", "NL", "PL", "SE", "US", "BR", "JP"]
    for i in range(n):
        customer = f"c{rnd.randrange(200):03d}"
        event = {"order_id": i, "customer": customer, "country": rnd.choice(countries),
                 "amount": round(rnd.uniform(5, 500), 2), "items": rnd.randint(1, 6),
                 "created_at": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"}
        yield customer.encode(), orjson.dumps(event)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def demo(messages: int = 1000, keep: str | None = None) -> int:
    from kpipe.broker import EmbeddedBroker
    from kpipe.kafka_admin import create_topic, produce
    from kpipe.runtime import Runner
    from kpipe.sinks.files.sink import parse_name
    from kpipe.spec import SpecError, load_spec

    if not QUICKSTART.exists():
        print(f"kpipe demo: {QUICKSTART} not found; run it from a kpipe checkout", file=sys.stderr)
        return 1
    out = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix="kpipe-demo-"))
    try:
        with EmbeddedBroker() as broker:
            _say(f"1. started the bundled Tansu broker on {broker.bootstrap}")
            create_topic(broker.bootstrap, "orders", PARTITIONS)
            produce(broker.bootstrap, "orders", sample_orders(messages))
            _say(f"2. produced {messages} sample orders to topic 'orders' ({PARTITIONS} partitions)")
            env = {**os.environ, "KAFKA_BROKERS": broker.bootstrap, "KPIPE_OUT": str(out)}
            try:
                spec = load_spec(str(QUICKSTART), env=env)
            except SpecError as err:
                print(err, file=sys.stderr)
                return 1
            _say(f"3. running {QUICKSTART.relative_to(QUICKSTART.parent.parent)} --until-caught-up "
                 f"(the consumer group join takes a few seconds)")
            result = Runner(spec, until_caught_up=True).run()
            if result.exit_code:
                print(f"kpipe demo: the pipeline failed: {result.reason}", file=sys.stderr)
                return result.exit_code
        _say(f"4. what landed in {out}/orders:")
        seen, total = set(), 0
        files = sorted(p for p in (out / "orders").rglob("*.jsonl"))
        for f in files:
            lines = f.read_bytes().splitlines()
            topic, partition, first, last = parse_name(f.name)
            _say(f"   {f.relative_to(out)}  {len(lines)} records, offsets {first}..{last}")
            total += len(lines)
            seen.update(orjson.loads(line)["order_id"] for line in lines)
        if files:
            _say(f"   first record: {files[0].read_bytes().splitlines()[0].decode()}")
        _say(f"   {total} records in {len(files)} files; {len(seen)} distinct orders of {messages} produced; "
             f"{total - len(seen)} duplicates")
        ok = total == messages == len(seen)
        _say("5. done: every order landed exactly once" if ok else "5. MISMATCH: see above")
        return 0 if ok else 2
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
            _say("   cleaned up: broker stopped, output removed (keep it with --keep DIR)")
