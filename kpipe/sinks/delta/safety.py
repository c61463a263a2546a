"""Refuse object store settings under which two writers could both commit one table version.

Delta's commit is "put ``_delta_log/<version>.json`` if absent". kpipe's fencing of a zombie
rests on it: the loser of a race must see the winner's commit and its txn actions. On S3,
delta-rs does that put with ``If-None-Match: *`` (a conditional put) unless told to use an
unsafe copy-and-rename, which silently overwrites a concurrent commit.
"""
from __future__ import annotations

from kpipe.api import FatalError

__all__ = ["check_storage_options"]

_TRUE = {"true", "1", "yes", "on"}


def check_storage_options(uri: str, options: dict) -> None:
    """Raise ``FatalError`` for options that make concurrent commits unsafe."""
    opts = {str(k).lower(): ("" if v is None else str(v)).strip().lower() for k, v in options.items()}
    if opts.get("aws_s3_allow_unsafe_rename", "") in _TRUE:
        raise FatalError(
            "delta: storage_options AWS_S3_ALLOW_UNSAFE_RENAME is true: two writers (a zombie and its "
            "replacement) could both commit the same table version, one overwriting the other's rows and "
            "offsets. Remove it: delta-rs commits with S3 conditional puts (If-None-Match), which S3, MinIO "
            "and moto honour; for a store without them set AWS_S3_LOCKING_PROVIDER: dynamodb")
    provider = opts.get("aws_s3_locking_provider", "")
    if provider and provider != "dynamodb":
        raise FatalError(f"delta: storage_options AWS_S3_LOCKING_PROVIDER {provider!r} is not one delta-rs "
                         "knows; use dynamodb (with DELTA_DYNAMO_TABLE_NAME) or leave it out for conditional puts")
    if provider == "dynamodb" and not opts.get("delta_dynamo_table_name"):
        raise FatalError("delta: AWS_S3_LOCKING_PROVIDER dynamodb needs DELTA_DYNAMO_TABLE_NAME in storage_options "
                         "(the lock table); without it commits would not be serialised")
    put = opts.get("conditional_put", opts.get("aws_conditional_put", ""))
    if put and put not in ("etag", "dynamo"):
        raise FatalError(f"delta: storage_options conditional_put {put!r}: use etag (or leave it out)")
