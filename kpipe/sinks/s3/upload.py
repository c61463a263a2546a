"""One S3 object, written as a stream: a single PUT when it stays small, else a multipart upload
whose parts go out as they fill, so at most one part is ever held in memory.

Either way the object appears whole or not at all: S3 shows a PUT's object once it is complete,
and a multipart upload's only when it is completed.
"""
from __future__ import annotations

from .store import Store

__all__ = ["ObjectUpload"]

_CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256", "ChecksumCRC64NVME")


class ObjectUpload:
    """A binary target (``write``/``tell``/``flush``) that becomes the object ``key``.

    ``finish(**condition)`` publishes it, with ``IfNoneMatch="*"`` or ``IfMatch=etag``, and returns
    its ETag; ``Precondition`` leaves the upload in place so ``finish`` can be called again with
    another condition. ``abort()`` discards it.
    """

    def __init__(self, store: Store, key: str, part_size: int, content_type: str = "application/octet-stream",
                 before_send=None):
        self.store = store
        self.before_send = before_send  # called before the first request: waits for the fence
        self.key = key
        self.part_size = part_size
        self.content_type = content_type
        self.buf = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None
        self.size = 0

    # -- the file-like side the format writers see ----------------------------------------

    def write(self, data) -> int:
        n = len(data)
        self.size += n
        room = self.part_size - len(self.buf)
        if n < room:
            self.buf += data
            return n
        # Parts of exactly part_size: the buffer never holds more than one part.
        view = memoryview(data)
        pos = 0
        while n - pos >= room:
            self.buf += view[pos:pos + room]
            pos += room
            self._send_part()
            room = self.part_size
        self.buf += view[pos:]
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    # -- S3 ---------------------------------------------------------------------------------

    def _send_part(self) -> None:
        store, key = self.store, self.key
        if self.upload_id is None:
            if self.before_send is not None:
                self.before_send()
            self.upload_id = store.call(f"starting the upload of {key}", "create_multipart_upload", Key=key,
                                        ContentType=self.content_type)["UploadId"]
        number = len(self.parts) + 1
        body, self.buf = self.buf, bytearray()
        resp = store.call(f"uploading part {number} of {key}", "upload_part", Key=key, UploadId=self.upload_id,
                          PartNumber=number, Body=body)
        part = {"PartNumber": number, "ETag": resp["ETag"]}
        part.update((k, resp[k]) for k in _CHECKSUMS if k in resp)  # the upload may require them back
        self.parts.append(part)

    @property
    def multipart(self) -> bool:
        """A multipart upload is open (started, not yet completed or aborted)."""
        return self.upload_id is not None

    def finish(self, **condition) -> str:
        store, key = self.store, self.key
        if self.upload_id is None:
            if self.before_send is not None:
                self.before_send()
            resp = store.call(f"writing {key}", "put_object", Key=key, Body=self.buf, ContentType=self.content_type,
                              **condition)
        else:
            if self.buf:
                self._send_part()  # the last part may be smaller than part_size
            resp = store.call(f"completing the upload of {key}", "complete_multipart_upload", Key=key,
                              UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}, **condition)
            self.upload_id = None  # completed: nothing left to abort
        return resp.get("ETag", "")

    def abort(self) -> None:
        self.buf = bytearray()
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            self.store.abort(self.key, upload_id, f"aborting the upload of {self.key}")
