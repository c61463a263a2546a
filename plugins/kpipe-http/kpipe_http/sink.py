"""The ``http`` sink: each batch as one or more POST requests, at least once.

Delivery: ``write`` returns once every record has been accepted (2xx) by the receiver, so the
runner commits only what the receiver has. A request that fails transiently (408, 409, 429, 5xx,
a connection error or timeout) raises ``RetryableError``; requests of the same ``write`` that
were already accepted are remembered by this instance (per record offset), so the runner's retry
sends only what is missing. After a crash they are sent again: at least once. Every request
carries an idempotency key naming exactly the records it holds, so a receiver can drop replays.

A 400/422/413 answer for a request of several records is narrowed to the first record the
receiver rejects by sending halves of it (the halves it accepts are then delivered and
remembered, as above), and raised as ``BadRecordError`` for the runner's error policy.
"""
from __future__ import annotations

import base64
import email.utils
import gzip
import hashlib
import http.client
import logging
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from kpipe.api import Batch, BadRecordError, FatalError, RetryableError, Sink, SinkContext

__all__ = ["HttpSink", "idempotency_key"]

log = logging.getLogger("kpipe.http")

RETRYABLE = {408, 409, 425, 429}
REJECTS_RECORDS = {400, 413, 422}
FIXES = {
    401: "check the credentials in sink.headers (e.g. Authorization) or the url",
    403: "the credentials are valid but not allowed to POST there; check the receiver's permissions",
    404: "check sink.url: the path does not exist on that server",
    405: "the endpoint does not accept POST; check sink.url",
}


def idempotency_key(topic: str, partition: int, offsets: Sequence[int], prefix: str = "") -> str:
    """The key of a request holding the records at ``offsets`` of ``topic[partition]``.

    ``<prefix><topic>/<partition>/<first>-<last + 1>``; when the records are not every offset of
    that range (filtered or skipped records, a rejected record left out), a digest of the offsets
    follows (``~<16 hex>``), so two requests share a key only if they hold the same records.
    """
    lo, hi = offsets[0], offsets[-1] + 1
    key = f"{prefix}{topic}/{partition}/{lo}-{hi}"
    if len(offsets) != hi - lo:
        digest = hashlib.blake2b(",".join(map(str, offsets)).encode(), digest_size=8).hexdigest()
        key += f"~{digest}"
    return quote(key, safe="/-_.~:@+=")


def _text(b: bytes) -> str:
    """A key or a bytes value in JSON: UTF-8 text when it is, else base64."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(b).decode("ascii")


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _text(bytes(obj))
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # a 3xx becomes an HTTPError, reported as a misconfigured url


class _Rejected(Exception):
    """A request of records the receiver refused as bad data (400/413/422)."""

    def __init__(self, status: int, detail: str):
        super().__init__(status, detail)
        self.status, self.detail = status, detail


class HttpSink(Sink):
    def __init__(self, config: Mapping[str, Any], context: SinkContext):
        super().__init__(config, context)
        parts = urlsplit(config["url"])
        self.headers: dict[str, str] = {}
        if parts.username is not None or parts.password is not None:
            user = parts.username or ""
            creds = f"{user}:{parts.password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(creds).decode("ascii")
            netloc = parts.hostname or ""
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit(parts)
        self.host, self.port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        # What messages show: no credentials, no query string (it may hold a token).
        self.where = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
        self.headers.update({str(k): str(v) for k, v in (config.get("headers") or {}).items()})
        self.ndjson = config.get("format", "json") == "ndjson"
        self.gzip = config.get("compression", "none") == "gzip"
        self.timeout = float(config.get("timeout", 30))
        self.chunk = int(config.get("max_records_per_request", 500))
        self.metadata = list(config.get("metadata") or ())
        self.key_header = config.get("idempotency_header", "Idempotency-Key")
        self.key_prefix = config.get("idempotency_prefix", "")
        self.opener = urllib.request.build_opener(_NoRedirect)
        # Offsets accepted by the receiver during a write that has not returned yet, per
        # partition: a retry of that write skips them. Cleared when a write returns.
        self.sent: dict[tuple, set[int]] = {}
        self.requests = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Check the receiver is reachable (a TCP connection, no request), unless a proxy is used."""
        scheme = urlsplit(self.url).scheme
        proxies = urllib.request.getproxies()
        if scheme in proxies and not urllib.request.proxy_bypass(self.host):
            return
        try:
            socket.create_connection((self.host, self.port), timeout=self.timeout).close()
        except OSError as exc:
            raise RetryableError(f"http sink: cannot connect to {self.where}: {exc}") from None

    def alter_offsets(self, group, positions, expected) -> None:
        """Nothing is stored at the receiver: the position lives in the group, which
        ``kpipe offsets reset`` moves. Only this instance's memory of a write in progress goes.
        A replay sends the same idempotency keys for the same records, so a receiver that drops
        repeated keys drops the replay too (``idempotency_prefix`` gives a replay new keys)."""
        self.revoke(positions)

    def revoke(self, partitions) -> None:
        for tp in partitions:
            self.sent.pop(tuple(tp), None)

    def close(self) -> None:
        self.sent.clear()

    # -- writing -------------------------------------------------------------------------------

    def write(self, batches: Sequence[Batch]) -> None:
        for batch in batches:
            self._write_batch(batch)
        for batch in batches:
            self.sent.pop((batch.topic, batch.partition), None)

    def _write_batch(self, batch: Batch) -> None:
        if not batch.values:
            return
        tp = (batch.topic, batch.partition)
        sent = self.sent.setdefault(tp, set())
        offsets = batch.offsets
        todo = [i for i, o in enumerate(offsets) if o not in sent]
        if not todo:
            return
        records = self._records(batch, todo, offsets)
        for lo in range(0, len(todo), self.chunk):
            idx = todo[lo:lo + self.chunk]
            recs = records[lo:lo + self.chunk]
            try:
                self._post(batch, idx, recs, offsets)
            except _Rejected as rej:
                bad = self._narrow(batch, idx, recs, offsets, rej)
                if bad is None:
                    continue  # every part was accepted on its own: all delivered
                index, why = bad
                raise BadRecordError.in_batch(
                    f"http sink: {self.where} rejected the record: {why}", batch, index) from None

    def _records(self, batch: Batch, idx: list[int], offsets: list[int]) -> list[bytes]:
        """Each record as encoded JSON, in the order of ``idx``."""
        values = batch.values
        if not self.metadata:
            return [self._dump(values[i], batch, i) for i in idx]
        want = set(self.metadata)
        keys = batch.keys if "key" in want else None
        stamps = batch.timestamps if "timestamp" in want else None
        out = []
        for i in idx:
            rec: dict[str, Any] = {"value": values[i]}
            if "topic" in want:
                rec["topic"] = batch.topic
            if "partition" in want:
                rec["partition"] = batch.partition
            if "offset" in want:
                rec["offset"] = offsets[i]
            if keys is not None:
                rec["key"] = keys[i]
            if stamps is not None:
                rec["timestamp"] = stamps[i]
            out.append(self._dump(rec, batch, i))
        return out

    def _dump(self, obj: Any, batch: Batch, i: int) -> bytes:
        try:
            return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise BadRecordError.in_batch(f"http sink: cannot encode the record as JSON: {exc}", batch, i) from None

    def _body(self, recs: list[bytes]) -> bytes:
        if self.ndjson:
            return b"\n".join(recs) + b"\n"
        return b'{"records":[' + b",".join(recs) + b"]}"

    def _narrow(self, batch, idx, recs, offsets, rej: _Rejected):
        """The first record of a rejected request the receiver rejects alone, as (index, why),
        sending the halves before it (which are then delivered); None if every half passes."""
        if len(idx) == 1:
            return idx[0], f"HTTP {rej.status}: {rej.detail}"
        mid = len(idx) // 2
        for part, part_recs in ((idx[:mid], recs[:mid]), (idx[mid:], recs[mid:])):
            try:
                self._post(batch, part, part_recs, offsets)
            except _Rejected as sub:
                found = self._narrow(batch, part, part_recs, offsets, sub)
                if found is not None:
                    return found
        return None

    def _post(self, batch: Batch, idx: list[int], recs: list[bytes], offsets: list[int]) -> None:
        """Send one request; on a 2xx remember its records as delivered."""
        chunk_offsets = [offsets[i] for i in idx]
        body = self._body(recs)
        headers = dict(self.headers)
        headers["Content-Type"] = "application/x-ndjson" if self.ndjson else "application/json"
        headers[self.key_header] = idempotency_key(batch.topic, batch.partition, chunk_offsets, self.key_prefix)
        if self.gzip:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        what = f"{batch.topic}[{batch.partition}]@{chunk_offsets[0]}..{chunk_offsets[-1]}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests += 1
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            self._failed(exc, what)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RetryableError(f"http sink: POST {self.where} ({what}) failed: {reason}") from None
        if not 200 <= status < 300:  # 1xx/3xx that reached here
            raise FatalError(f"http sink: POST {self.where} answered HTTP {status}; expected 2xx")
        self.sent.setdefault((batch.topic, batch.partition), set()).update(chunk_offsets)
        log.debug("http sink: POST %s: %d records (%s), HTTP %d", self.where, len(idx), what, status)

    def _failed(self, exc: urllib.error.HTTPError, what: str):
        status = exc.code
        try:
            detail = exc.read(2048).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - the body is only for the message
            detail = ""
        finally:
            exc.close()
        detail = " ".join(detail.split())[:300] or (exc.reason or "")
        if status in REJECTS_RECORDS:
            raise _Rejected(status, detail)
        if status in RETRYABLE or 500 <= status < 600:
            wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            hint = f"; Retry-After: {wait:.0f} s" if wait is not None else ""
            raise RetryableError(f"http sink: POST {self.where} ({what}): HTTP {status} {detail}{hint}") from None
        if 300 <= status < 400:
            location = exc.headers.get("Location", "?") if exc.headers else "?"
            raise FatalError(f"http sink: POST {self.where} redirects (HTTP {status}) to {location}: "
                             f"set sink.url to the final address") from None
        fix = FIXES.get(status, "the receiver refuses these requests; check sink.url and sink.headers")
        raise FatalError(f"http sink: POST {self.where} answered HTTP {status} {detail}: {fix}") from None
