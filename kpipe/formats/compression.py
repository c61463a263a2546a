"""Whole-stream compression for the text formats (jsonl, csv): none, gzip or zstd.

Each stream wraps a binary target (anything with ``write(bytes)``) and is itself written to with
``write(bytes)``; ``close()`` writes the trailer but leaves the target open. Output depends only on
the bytes written, so the same records compress to the same bytes on every replay (given the same
zlib, isal and zstandard builds; gzip level 1 is ISA-L's where the ``isal`` package is installed,
``kpipe[fast-gzip]``, and zlib's elsewhere: other bytes, the same text once decompressed).
"""
from __future__ import annotations

import struct
import zlib

from kpipe.api import FatalError

__all__ = ["COMPRESSIONS", "SUFFIXES", "DEFAULT_LEVELS", "open_stream", "deflater", "GzipStream", "ZstdStream"]

COMPRESSIONS = ("none", "gzip", "zstd")
SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}
# gzip 6 is zlib's and Kafka Connect's default, but it costs ~3x the CPU of level 1 for ~15 %
# smaller JSON (measured in benchmarks/README.md); level 1 keeps up with a single consumer core.
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}


def deflater(level: int):
    """A raw deflate compressor at ``level``: ISA-L's for level 1 when the ``isal`` package is
    installed (about 3 × faster than zlib's level 1, with output no larger: benchmarks/README.md,
    "Files: against the speed target"), else zlib's. ISA-L has no counterpart of zlib's higher
    levels, so those stay zlib's."""
    if level == 1:
        isal = _isal_zlib()
        if isal is not None:
            return isal.compressobj(1, isal.DEFLATED, -isal.MAX_WBITS)
    return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)


_ISAL: list = []


def _isal_zlib():
    """``isal.isal_zlib``, or None when the package is missing (looked up once)."""
    if not _ISAL:
        try:
            from isal import isal_zlib
        except ImportError:
            isal_zlib = None
        _ISAL.append(isal_zlib)
    return _ISAL[0]


class GzipStream:
    """RFC 1952 gzip: a fixed 10-byte header (no name, mtime 0, OS unknown), raw deflate, CRC32
    and size. The fixed header is what makes the output byte-identical across runs and hosts;
    zlib's own gzip header would record the build platform."""

    __slots__ = ("target", "_deflate", "_crc", "_size", "_crc32")

    def __init__(self, target, level: int = DEFAULT_LEVELS["gzip"]):
        self.target = target
        self._deflate = deflater(level)
        isal = _isal_zlib()  # the same CRC-32, about 18 x faster than zlib's
        self._crc32 = isal.crc32 if isal is not None else zlib.crc32
        self._crc = 0
        self._size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        target.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255]))

    def write(self, data) -> int:
        # zlib and isal release the GIL while they compress, so other threads keep running.
        self._crc = self._crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        if out:
            self.target.write(out)
        return len(data)

    def close(self) -> None:
        self.target.write(self._deflate.flush() + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


class ZstdStream:
    """One zstd frame, written incrementally (needs the ``zstandard`` package)."""

    __slots__ = ("target", "_cobj")

    def __init__(self, target, level: int = DEFAULT_LEVELS["zstd"]):
        zstandard = require_zstandard()
        self.target = target
        self._cobj = zstandard.ZstdCompressor(level=level).compressobj()

    def write(self, data) -> int:
        out = self._cobj.compress(data)
        if out:
            self.target.write(out)
        return len(data)

    def close(self) -> None:
        self.target.write(self._cobj.flush())


def require_zstandard():
    try:
        import zstandard
    except ImportError:
        raise FatalError('compression zstd needs the zstandard package; run: pip install "kpipe[zstd]"') from None
    return zstandard


def open_stream(target, compression: str, level: int | None = None):
    """``target`` itself for ``none``, else a compressing stream in front of it."""
    if compression == "none":
        return target
    if compression == "gzip":
        return GzipStream(target, DEFAULT_LEVELS["gzip"] if level is None else level)
    if compression == "zstd":
        return ZstdStream(target, DEFAULT_LEVELS["zstd"] if level is None else level)
    raise ValueError(f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")
