"""Confluent's Protobuf wire header, after the magic byte and the 4-byte schema id.

The message indexes say which message of the schema's file the payload is: a zig-zag varint
count, then that many zig-zag varints, each an index into the file's top-level messages (the
first) or into the previous message's nested ones. ``[0]`` (the file's first message) has a
short form: the single byte 0 (a count of zero).
"""
from __future__ import annotations

__all__ = ["read_indexes", "encode_indexes", "WireError"]

_FIRST = (0,)
_MAX_INDEXES = 100  # nesting depth that a real schema never reaches; past it the header is garbage


class WireError(ValueError):
    """The header is not a valid message-index array (a bad value, not a registry problem)."""


def _varint(v: bytes, pos: int) -> tuple[int, int]:
    """(the zig-zag varint at ``pos``, the position after it)."""
    shift = result = 0
    n = len(v)
    while True:
        if pos >= n:
            raise WireError("the message-index varint is cut short")
        b = v[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise WireError("a message-index varint is longer than 10 bytes")


def read_indexes(v: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """(the message indexes at ``pos``, the position of the payload); ``WireError`` when they
    are cut short or impossible."""
    if pos < len(v) and v[pos] == 0:  # the short form of [0]: by far the most common
        return _FIRST, pos + 1
    count, pos = _varint(v, pos)
    if count < 0 or count > _MAX_INDEXES:
        raise WireError(f"{count} message indexes (expected 0 to {_MAX_INDEXES})")
    out = []
    for _ in range(count):
        i, pos = _varint(v, pos)
        if i < 0:
            raise WireError(f"a negative message index ({i})")
        out.append(i)
    return tuple(out), pos


def encode_indexes(indexes) -> bytes:
    """The wire form of ``indexes`` (what a serializer writes), ``[0]`` as the single byte 0."""
    indexes = list(indexes)
    if indexes in ([], [0]):
        return b"\x00"
    out = bytearray()
    for value in [len(indexes), *indexes]:
        z = (value << 1) ^ (value >> 63)
        while z & ~0x7F:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)
