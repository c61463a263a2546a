"""Issue 15 item 6: the S3 sink's ``offset_pad_width`` takes any positive width, as Kafka
Connect's ``filename.offset.zero.pad.width`` does. From 19 digits up every offset fits the width,
so the names sort in offset order; they parse back (the clean-up after a crash finds its uploads
by them) and a restarted sink carries on after the objects already there."""
from __future__ import annotations

import re

import orjson
import pytest

from kpipe.spec import SpecError, load_spec
from s3kit import bucket, make_batch, moto_server, objects, read_records, s3, state_of, uploads  # noqa: F401
from test_s3_sink import orders, sink

WIDTH = 25
BIG = 2**63 - 40  # near the largest offset Kafka has: 19 digits


def spec_with_width(tmp_path, width) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(f"""name: wide
source: {{brokers: localhost:9092, topic: orders}}
sink: {{type: s3, bucket: lake, layout: kafka-connect, offset_pad_width: {width}}}
""")
    return str(path)


@pytest.mark.parametrize("width", [1, 19, 20, WIDTH, 64])
def test_any_positive_width_validates(tmp_path, width):
    assert load_spec(spec_with_width(tmp_path, width)).sink_config["offset_pad_width"] == width


def test_a_width_below_one_is_refused(tmp_path):
    with pytest.raises(SpecError, match="offset_pad_width"):
        load_spec(spec_with_width(tmp_path, 0))


def test_wide_names_sort_parse_and_survive_a_restart(moto_server, s3, bucket):
    config = dict(layout="kafka-connect", offset_pad_width=WIDTH, format="jsonl")
    s = sink(moto_server, bucket, **config)
    s.write([make_batch(orders(10), 0, partition=3), make_batch(orders(10), BIG, partition=1)])
    s.write([make_batch(orders(5, 10), 10, partition=3)])
    # a run that crashed mid-batch: its pending state, one object written, one upload dangling
    left = f"topics/orders/partition=3/orders+3+{15:0{WIDTH}d}.json"
    dangling = f"topics/orders/partition=3/orders+3+{17:0{WIDTH}d}.json"
    s3.put_object(Bucket=bucket, Key=left, Body=b'{"order_id":15}\n')
    s3.create_multipart_upload(Bucket=bucket, Key=dangling)
    state = state_of(s3, bucket, "", "orders", 3)
    state["pending"] = {"start": 15, "next": 20, "keys": [left, dangling]}
    s3.put_object(Bucket=bucket, Key="_kpipe/state/orders/3.json", Body=orjson.dumps(state))

    restarted = sink(moto_server, bucket, **config)
    assert restarted.load_offsets([("orders", 3), ("orders", 1)]) == {("orders", 3): 15, ("orders", 1): BIG + 10}
    restarted.write([make_batch(orders(6, 15), 15, partition=3), make_batch(orders(2), BIG + 10, partition=1)])
    assert uploads(s3, bucket) == []  # found by its wide name and aborted

    got = objects(s3, bucket)
    name = re.compile(r"^topics/orders/partition=(\d+)/orders\+(\d+)\+(\d{%d})\.json$" % WIDTH)
    starts = {}
    for key in got:
        m = name.match(key)
        assert m, key
        starts.setdefault(int(m[1]), []).append(int(m[3]))
    assert {p: sorted(v) for p, v in starts.items()} == {3: [0, 10, 15], 1: [BIG, BIG + 10]}
    for p in starts:  # a plain sort of the names is offset order
        keys = sorted(k for k in got if f"partition={p}/" in k)
        assert [int(name.match(k)[3]) for k in keys] == sorted(starts[p])
    ids = sorted(r["order_id"] for k in got if "partition=3/" in k for r in read_records(k, got[k]))
    assert ids == list(range(21))
