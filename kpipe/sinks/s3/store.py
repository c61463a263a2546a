"""The bucket: one boto3 client, and S3's errors sorted into kpipe's taxonomy.

- connection failures, timeouts, 5xx, SlowDown and other throttling: ``RetryableError`` (botocore
  has already retried each request a few times; the runner retries the write with its own,
  longer backoff, then exits 3);
- 412 Precondition Failed: ``Precondition``, which the sink turns into fencing;
- everything else (NoSuchBucket, AccessDenied, a wrong region, no credentials): ``FatalError``
  with a message that names the bucket and the fix. Credentials are never printed.
"""
from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError, HTTPClientError,
                                 NoCredentialsError, PartialCredentialsError)

from kpipe.api import FatalError, RetryableError

__all__ = ["Store", "Precondition", "UploadGone"]

_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
                    "ConditionalRequestConflict", "OperationAborted", "RequestLimitExceeded"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_PERMISSIONS = ("s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucketMultipartUploads "
                "and s3:AbortMultipartUpload")


class Precondition(Exception):
    """A conditional request (If-Match / If-None-Match) found the object not as required."""


class UploadGone(Exception):
    """The multipart upload was aborted under us: by a writer that took the partition over, or
    by a lifecycle rule."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


class Store:
    """A bucket reached through one boto3 client (thread-safe, shared by the sink's threads)."""

    def __init__(self, bucket: str, *, endpoint_url: str | None, region: str | None,
                 addressing_style: str = "auto", max_connections: int = 10, prefix: str = ""):
        self.bucket = bucket
        self.prefix = prefix
        self.where = endpoint_url or "AWS S3"
        config = Config(
            # A few quick tries per request; kpipe's own retry (spec `retry:`) does the long waits.
            # Every wait is bounded: a silent endpoint costs at most 3 x (5 + 30) s per request,
            # then the runner's retry takes over (and its own bound, retry.max_elapsed).
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5, read_timeout=30,
            max_pool_connections=max_connections,
            s3={"addressing_style": addressing_style},
            user_agent_extra="kpipe",
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region,
                                                     config=config)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- errors -----------------------------------------------------------------------------

    def translate(self, exc: Exception, doing: str) -> Exception:
        """The kpipe error for a botocore exception raised while ``doing``."""
        bucket = self.bucket
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return FatalError(f"{doing} s3://{bucket}: no AWS credentials found. boto3 looks in AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, then container and "
                              "instance roles: set one of them")
        if isinstance(exc, (HTTPClientError, ConnectionError)):
            return RetryableError(f"{doing} s3://{bucket} at {self.where}: {exc}")
        if isinstance(exc, BotoCoreError):
            return FatalError(f"{doing} s3://{bucket}: {exc}")
        if not isinstance(exc, ClientError):
            return exc
        code, status = _code(exc), _status(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        if status >= 500 or code in _RETRYABLE_CODES or status == 429:
            return RetryableError(f"{doing} s3://{bucket}: {code or 'HTTP'} {status} from {self.where}")
        if code == "NoSuchBucket" or (status == 404 and doing == "checking bucket"):
            return FatalError(f"bucket {bucket!r} does not exist at {self.where}: create it "
                              f"(aws s3 mb s3://{bucket}) or set sink.bucket to an existing one")
        if code in _DENIED_CODES or status == 403:
            return FatalError(f"access to bucket {bucket!r} denied ({code or status}) while {doing}: check the "
                              f"credentials boto3 finds (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance or task role) "
                              f"and that their policy allows {_PERMISSIONS} on "
                              f"arn:aws:s3:::{bucket}/{self.prefix + '/' if self.prefix else ''}*")
        if code in _REGION_CODES or status == 301:
            region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            hint = f"set sink.region to {region}" if region else "set sink.region to the bucket's region"
            return FatalError(f"bucket {bucket!r} is in another region than the client's: {hint}")
        return FatalError(f"{doing} s3://{bucket}: {code} ({status}): {message}")

    def call(self, doing: str, method: str, **kwargs):
        """``client.<method>(Bucket=..., **kwargs)`` with errors translated; a failed condition
        (412, or 404 for an If-Match on a missing key) raises ``Precondition``."""
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            status = _status(exc)
            if status == 412 or (status == 404 and "IfMatch" in kwargs):
                raise Precondition(f"{doing}: {_code(exc) or status}") from None
            if _code(exc) == "NoSuchUpload":
                raise UploadGone(f"{doing}: the upload was aborted") from None
            raise self.translate(exc, doing) from None
        except BotoCoreError as exc:
            raise self.translate(exc, doing) from None

    # -- requests the sink needs --------------------------------------------------------------

    def check(self) -> None:
        """Fail now, with the fix in the message, if the bucket is missing or not ours to use."""
        self.call("checking bucket", "head_bucket")

    def get(self, key: str, doing: str) -> tuple[bytes, str] | None:
        """(body, ETag) of ``key``, or None when it does not exist."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            return resp["Body"].read(), resp["ETag"]
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404") or _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                return None
            raise self.translate(exc, doing) from None
        except BotoCoreError as exc:
            raise self.translate(exc, doing) from None

    def etag(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self.translate(exc, f"reading {key}") from None
        except BotoCoreError as exc:
            raise self.translate(exc, f"reading {key}") from None

    def delete(self, keys, doing: str) -> None:
        """Delete ``keys`` (missing ones are fine), 1000 per request."""
        keys = sorted(set(keys))
        for i in range(0, len(keys), 1000):
            resp = self.call(doing, "delete_objects",
                             Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                err = ClientError({"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")},
                                   "ResponseMetadata": {"HTTPStatusCode": 403 if first.get("Code") == "AccessDenied"
                                                        else 500}}, "DeleteObjects")
                raise self.translate(err, f"{doing} ({first.get('Key')})")

    def uploads(self, prefix: str, doing: str):
        """(key, upload id) of every multipart upload in progress under ``prefix``."""
        kwargs = {"Prefix": prefix} if prefix else {}
        while True:
            resp = self.call(doing, "list_multipart_uploads", **kwargs)
            for u in resp.get("Uploads", []):
                yield u["Key"], u["UploadId"]
            if not resp.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = resp.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")

    def abort(self, key: str, upload_id: str, doing: str) -> None:
        """Abort a multipart upload; one that is already gone is fine."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload" and _status(exc) != 404:
                raise self.translate(exc, doing) from None
        except BotoCoreError as exc:
            raise self.translate(exc, doing) from None
