"""The http sink passes kpipe's conformance kit against a real local receiver.

It declares neither idempotent_writes nor stores_offsets (at least once), so the kit checks
no loss and skips its exactly-once checks: ``read_back`` is every record the receiver accepted,
duplicates included.
"""
from __future__ import annotations

import pytest

from kpipe.testing import SinkConformance
from kpipe_http import plugin
from receiver import Receiver


class TestHttpSink(SinkConformance):
    plugin = plugin

    @pytest.fixture(autouse=True)
    def _receiver(self):
        self.receiver = Receiver()
        self.receiver.reject = lambda record: isinstance(record, dict) and record.get("reject") is True
        yield
        self.receiver.close()

    def config(self, tmp_path):
        return {"url": self.receiver.url, "max_records_per_request": 2, "timeout": 5}

    def read_back(self, config):
        return list(self.receiver.accepted)

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "reject": True}  # the receiver answers 400

    def destination_down(self, config):
        return self.receiver.outage()


class TestHttpSinkByEntryPoint(TestHttpSink):
    """The same, found through the kpipe.sinks entry point of the installed distribution, NDJSON and gzip."""
    plugin = "http"

    def config(self, tmp_path):
        return {"url": self.receiver.url, "format": "ndjson", "compression": "gzip", "timeout": 5}
