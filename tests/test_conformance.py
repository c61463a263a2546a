"""Every built-in sink passes the plugin conformance kit (``kpipe.testing``).

Outages for the retryable-error check come from cutting a TCP proxy in front of the real server
(PostgreSQL, MariaDB, moto's S3). The files sink and SQLite have no transient failures to provoke:
their retryable check is skipped (files raises only FatalError and BadRecordError by design).
The files sink runs the kit in each of its formats: every one refuses a value it cannot encode
(a complex number) as a bad record, so the bad-record check runs for all of them.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from kpipe.sinks.files import plugin as files_plugin
from kpipe.testing import SinkConformance
from s3kit import bucket, moto_server, objects, read_records, s3  # noqa: F401
from sqlkit import TcpProxy, dbs  # noqa: F401


class TestFilesSink(SinkConformance):
    plugin = files_plugin
    format = "jsonl"

    def config(self, tmp_path):
        return {"path": str(tmp_path / "out"), "format": self.format}

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "n": 1j}  # no format writes a complex number

    def read_back(self, config):
        out = []
        for f in sorted(Path(config["path"]).rglob(f"*.{self.format}")):
            if not f.name.startswith("."):
                out += read_records(f.name, f.read_bytes())
        return out


class TestFilesSinkCsv(TestFilesSink):
    format = "csv"


class TestFilesSinkAvro(TestFilesSink):
    format = "avro"


class TestFilesSinkParquet(TestFilesSink):
    format = "parquet"


class _Sql(SinkConformance):
    kind = ""
    proxied = True

    @pytest.fixture(autouse=True)
    def _database(self, dbs):  # noqa: F811
        self.db = dbs(self.kind)
        self.db.groups.append(self.group)  # its offsets rows are deleted afterwards
        self.proxy = None
        if self.proxied:
            target = urlsplit(self.db.url)
            self.proxy = TcpProxy((target.hostname, target.port)).start()
        yield
        if self.proxy is not None:
            self.proxy.cut()

    def _url(self) -> str:
        if self.proxy is None:
            return self.db.url
        return sa.engine.make_url(self.db.url).set(host="127.0.0.1", port=self.proxy.port) \
            .render_as_string(hide_password=False)

    def config(self, tmp_path):
        return {"url": self._url(), "table": self.db.table("conf")}

    def deletes_config(self, tmp_path):
        return {"url": self._url(), "table": self.db.table("conf"), "mode": "upsert", "key": ["id"]}

    def bad_value(self, topic, partition, offset):
        # "n" is an integer column (inferred from the records before): a type error on
        # PostgreSQL and MariaDB; SQLite stores any type in any column, so its key is NULL.
        if self.kind == "sqlite":
            return {"id": None, "n": offset, "text": "no key"}
        return {"id": f"{topic}/{partition}/{offset}", "n": "not a number", "text": "bad"}

    def read_back(self, config):
        if not sa.inspect(self.db.engine).has_table(config["table"]):
            return []
        return [{"id": i} for (i,) in self.db.rows(f"SELECT id FROM {self.db.q(config['table'])}")]

    def destination_down(self, config):
        if self.proxy is None:
            pytest.skip(f"{self.kind}: no transient failure to provoke")
        return self.proxy.down()


class TestPostgresSink(_Sql):
    plugin = "postgres"
    kind = "postgres"


class TestMariadbSink(_Sql):
    plugin = "sql"
    kind = "mariadb"


class TestSqliteSink(_Sql):
    plugin = "sql"
    kind = "sqlite"
    proxied = False


class TestS3Sink(SinkConformance):
    plugin = "s3"

    @pytest.fixture(autouse=True)
    def _server(self, moto_server, s3, bucket):  # noqa: F811
        self.s3, self.bucket = s3, bucket
        self.proxy = TcpProxy(("127.0.0.1", moto_server.port)).start()
        yield
        self.proxy.cut()

    def config(self, tmp_path):
        return {"bucket": self.bucket, "prefix": "lake", "endpoint_url": f"http://127.0.0.1:{self.proxy.port}",
                "region": "us-east-1", "format": "jsonl"}

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "n": 1j}  # no JSON for a complex number

    def read_back(self, config):
        got = objects(self.s3, config["bucket"], config["prefix"] + "/")
        return [r for key in sorted(got) for r in read_records(key, got[key])]

    def destination_down(self, config):
        return self.proxy.down()


class TestS3SinkPerRecordPaths(TestS3Sink):
    """Records of one batch go to two paths (one object each): a bad record's index must still
    be its index in the batch, not in its path's group."""

    def config(self, tmp_path):
        return {**super().config(tmp_path), "path": "{topic}/{partition}/kind={value.kind}"}

    def value(self, topic, partition, offset):
        return {**super().value(topic, partition, offset), "kind": "odd" if offset % 2 else "even"}

    def bad_value(self, topic, partition, offset):
        return {**super().bad_value(topic, partition, offset), "kind": "odd" if offset % 2 else "even"}
