"""The http sink against a real local receiver: status mapping, bisection, idempotency keys."""
from __future__ import annotations

import base64
import logging

import pytest

from kpipe.api import BadRecordError, FatalError, RetryableError, SinkContext
from kpipe.testing import SinkConformance
from kpipe_http import plugin
from kpipe_http.sink import idempotency_key

KIT = SinkConformance()  # for batch(): FakeMessages with keys, headers, timestamps


def sink_for(receiver, **config):
    sink = plugin.create({"url": receiver.url, "timeout": 5, **config},
                         SinkContext(pipeline="t", group="g", log=logging.getLogger("t")))
    sink.open()
    return sink


def ids(records):
    return [r["id"] if "id" in r else r["value"]["id"] for r in records]


def test_a_batch_is_posted_as_json_in_chunks_with_stable_keys(receiver):
    sink = sink_for(receiver, max_records_per_request=3)
    batch = KIT.batch(10, 17)
    sink.write([batch])
    assert [len(r["records"]) for r in receiver.requests] == [3, 3, 1]
    assert ids(receiver.accepted) == ids(batch.values)
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert keys == ["kpipe_conformance/0/10-13", "kpipe_conformance/0/13-16", "kpipe_conformance/0/16-17"]
    assert all(r["headers"]["Content-Type"] == "application/json" for r in receiver.requests)
    # A new instance replaying the same batch (a crash before the commit) sends the same keys.
    again = sink_for(receiver, max_records_per_request=3)
    again.write([KIT.batch(10, 17)])
    assert [r["headers"]["Idempotency-Key"] for r in receiver.requests[3:]] == keys


def test_idempotency_key_names_exactly_the_records():
    assert idempotency_key("t", 1, [5, 6, 7]) == "t/1/5-8"
    gappy = idempotency_key("t", 1, [5, 7])
    assert gappy.startswith("t/1/5-8~") and gappy == idempotency_key("t", 1, [5, 7])
    assert gappy != idempotency_key("t", 1, [5, 6, 7]) != idempotency_key("t", 1, [6, 7])
    assert idempotency_key("t", 0, [1], prefix="orders:") == "orders:t/0/1-2"


def test_ndjson_gzip_metadata_and_headers(receiver, monkeypatch):
    sink = sink_for(receiver, format="ndjson", compression="gzip", headers={"X-Team": "data"},
                    metadata=["topic", "partition", "offset", "key", "timestamp"],
                    idempotency_header="X-Dedupe", idempotency_prefix="p1:")
    sink.write([KIT.batch(0, 2, partition=1)])
    (req,) = receiver.requests
    assert req["headers"]["Content-Encoding"] == "gzip"
    assert req["headers"]["Content-Type"] == "application/x-ndjson"
    assert req["headers"]["X-Team"] == "data"
    assert req["headers"]["X-Dedupe"] == "p1:kpipe_conformance/1/0-2"
    first = req["records"][0]
    assert first["topic"] == "kpipe_conformance" and first["partition"] == 1 and first["offset"] == 0
    assert first["key"] == "k0" and first["timestamp"] == 1_795_000_000_000
    assert first["value"]["id"] == "kpipe_conformance/1/0"


def test_basic_auth_from_the_url_is_sent_and_never_shown(receiver):
    url = receiver.url.replace("http://", "http://bob:s3cr3t-pw@")
    sink = sink_for(receiver, url=url)
    sink.write([KIT.batch(0, 1)])
    auth = receiver.requests[0]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"bob:s3cr3t-pw"
    receiver.fail_next = [401]
    with pytest.raises(FatalError) as info:
        sink.write([KIT.batch(1, 2)])
    assert "s3cr3t" not in str(info.value) and "bob" not in str(info.value)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable_and_the_retry_resends_only_what_is_missing(receiver, status):
    sink = sink_for(receiver, max_records_per_request=2)
    receiver.fail_next = [200, (status, {"Retry-After": "7"})]  # the first chunk lands, the second fails
    with pytest.raises(RetryableError) as info:
        sink.write([KIT.batch(0, 6)])
    assert f"HTTP {status}" in str(info.value) and "Retry-After: 7 s" in str(info.value)
    assert ids(receiver.accepted) == ids(KIT.batch(0, 2).values)
    sink.write([KIT.batch(0, 6)])  # the runner's retry
    assert ids(receiver.accepted) == ids(KIT.batch(0, 6).values), "the retry sent an accepted chunk again"


def test_connection_refused_is_retryable(receiver):
    sink = sink_for(receiver)
    with receiver.outage():
        with pytest.raises(RetryableError, match="failed"):
            sink.write([KIT.batch(0, 2)])
        with pytest.raises(RetryableError, match="cannot connect"):
            sink_for(receiver)
    sink.write([KIT.batch(0, 2)])
    assert len(receiver.accepted) == 2


@pytest.mark.parametrize("status, fix", [(401, "credentials"), (403, "permissions"), (404, "sink.url"),
                                         (405, "POST"), (410, "check sink.url")])
def test_refusals_are_fatal_name_the_url_and_the_fix(receiver, status, fix):
    secret = "Bearer very-secret-token"
    sink = sink_for(receiver, headers={"Authorization": secret})
    receiver.fail_next = [status]
    with pytest.raises(FatalError) as info:
        sink.write([KIT.batch(0, 2)])
    msg = str(info.value)
    assert receiver.url in msg and f"HTTP {status}" in msg and fix in msg
    assert "very-secret" not in msg
    assert receiver.requests[0]["headers"]["Authorization"] == secret


def test_a_redirect_is_fatal(receiver):
    sink = sink_for(receiver)
    receiver.fail_next = [(308, {"Location": "http://elsewhere.example/hook"})]
    with pytest.raises(FatalError, match="elsewhere.example"):
        sink.write([KIT.batch(0, 1)])


@pytest.mark.parametrize("status", [400, 422, 413])
def test_a_rejected_chunk_is_bisected_to_the_first_bad_record(receiver, status):
    sink = sink_for(receiver, max_records_per_request=8)
    receiver.status_for_reject = status
    receiver.reject = lambda r: r["n"] in (13, 14)
    batch = KIT.batch(8, 20)  # chunks 8..15, 16..19
    with pytest.raises(BadRecordError) as info:
        sink.write([batch])
    exc = info.value
    assert (exc.topic, exc.partition, exc.offset, exc.index) == ("kpipe_conformance", 0, 13, 5)
    assert f"HTTP {status}" in str(exc)
    # The bisection delivered what precedes the bad record, nothing after it.
    assert sorted(r["n"] for r in receiver.accepted) == [8, 9, 10, 11, 12]
    # The runner's error policy drops 13 and writes the rest; 14 is next.
    rest = batch.without(exc.index)
    with pytest.raises(BadRecordError) as info:
        sink.write([rest])
    assert info.value.offset == 14
    receiver.reject = None
    sink.write([rest.without(info.value.index)])
    got = sorted(r["n"] for r in receiver.accepted)
    assert got == [n for n in range(8, 20) if n not in (13, 14)], "a record was lost or sent twice"


def test_a_chunk_rejected_whole_but_accepted_in_parts_is_delivered(receiver):
    sink = sink_for(receiver)
    receiver.fail_next = [400]  # only the first request: its halves are accepted
    sink.write([KIT.batch(0, 5)])
    assert sorted(r["n"] for r in receiver.accepted) == [0, 1, 2, 3, 4]


def test_an_empty_batch_sends_nothing(receiver):
    sink = sink_for(receiver)
    sink.write([])
    sink.write([KIT.batch(0, 3, skip=range(3))])
    assert receiver.requests == []


def test_authorization_is_never_logged(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    sink = sink_for(receiver, headers={"Authorization": "Bearer very-secret-token"})
    sink.write([KIT.batch(0, 2)])
    receiver.fail_next = [503]
    with pytest.raises(RetryableError) as info:
        sink.write([KIT.batch(2, 4)])
    assert "very-secret" not in caplog.text + str(info.value)
    assert "POST" in caplog.text


def test_the_descriptor_marks_credentials_secret_and_imports_no_sink():
    import subprocess
    import sys
    code = ("import sys, kpipe_http; assert 'kpipe_http.sink' not in sys.modules; "
            "s = kpipe_http.CONFIG_SCHEMA['properties']; "
            "assert s['url']['x-secret'] and s['headers']['properties']['Authorization']['x-secret']")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not plugin.capabilities.idempotent_writes and not plugin.capabilities.stores_offsets


def test_a_spec_registers_authorization_and_the_url_password_as_secrets(tmp_path, monkeypatch):
    from kpipe.ops.redact import redact
    from kpipe.spec import load_spec
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nsource: {brokers: 'localhost:9092', topic: t}\n"
                    "sink:\n  type: http\n  url: http://u:pw-abcdef@127.0.0.1:1/hook\n"
                    "  headers: {Authorization: 'Bearer ${HOOKAUTH}'}\n")
    monkeypatch.setenv("HOOKAUTH", "plain-name-value")  # a name that does not say "secret"
    load_spec(str(spec))
    assert redact("auth Bearer plain-name-value at pw-abcdef") == "auth *** at ***"
