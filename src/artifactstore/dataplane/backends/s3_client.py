"""The S3 client the S3 modules share: its retry policy, its URL, and its errors in words.

Retries are botocore's, configured here and nowhere else: ``standard`` mode
(exponential backoff with jitter on throttling, 5xx and dropped connections)
or ``adaptive`` (the same, plus client-side rate limiting once the server
throttles), ``max_attempts`` attempts in all. Both come from the ``s3://``
URL, so the hot and cold storages may differ. A failure that survives them
becomes a :class:`~artifactstore.errors.StorageError` whose message says what
to fix: the endpoint, the credentials, the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlparse

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from artifactstore.errors import InvalidInput, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Location", "code", "make_client", "parse_s3_url", "s3_error"]

RetryMode = Literal["standard", "adaptive"]
_MODES: tuple[RetryMode, ...] = ("standard", "adaptive")
_MAX_ATTEMPTS = 20
_PARAMETERS = frozenset({"endpoint", "region", "retry_mode", "max_attempts"})
#: What S3 answers a request whose credentials it does not accept.
_REFUSED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccessDenied",
        "403",
    }
)

#: botocore's data files (the S3 service model, endpoint rules), parsed once per process.
#: Parsing them is most of a new client's cost (0.37-0.5 s against 0.06 s with this loader
#: shared; every scale-out ``Store.open`` makes two clients). Only the loader is shared: each
#: client still gets its own session, so credentials are resolved afresh, as before.
_LOADER = botocore.loaders.create_loader()


@dataclass(frozen=True, slots=True)
class S3Location:
    """What an ``s3://BUCKET/PREFIX?endpoint=URL&region=R&retry_mode=M&max_attempts=N``
    URL names (no secret: credentials come the standard AWS way)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    retry_mode: RetryMode = "standard"
    max_attempts: int = 5


def parse_s3_url(url_text: str) -> S3Location:
    """The location an ``s3://`` URL names; InvalidInput for an unknown or bad parameter."""
    url = urlparse(url_text)
    query = parse_qs(url.query)
    unknown = sorted(set(query) - _PARAMETERS)
    if unknown:
        raise InvalidInput(f"unknown s3:// URL parameter(s) {', '.join(unknown)}")
    one = {k: v[-1] for k, v in query.items()}
    mode = one.get("retry_mode", "standard")
    if mode not in _MODES:
        raise InvalidInput(f"s3:// retry_mode must be standard or adaptive, not {mode[:40]!r}")
    attempts_text = one.get("max_attempts", "5")
    if not attempts_text.isdigit() or not 1 <= int(attempts_text) <= _MAX_ATTEMPTS:
        raise InvalidInput(
            f"s3:// max_attempts must be a whole number from 1 to {_MAX_ATTEMPTS}, "
            f"not {attempts_text[:40]!r}"
        )
    return S3Location(
        bucket=url.netloc,
        prefix=url.path,
        endpoint=one.get("endpoint"),
        region=one.get("region"),
        retry_mode=mode,
        max_attempts=int(attempts_text),
    )


def make_client(location: S3Location) -> S3Client:
    """A client with the location's retry policy and bounded connect/read waits."""
    config = Config(
        # total_max_attempts counts the first attempt; botocore's max_attempts does not.
        retries={"total_max_attempts": location.max_attempts, "mode": location.retry_mode},
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    try:
        session = botocore.session.Session()
        session.register_component("data_loader", _LOADER)
        client: S3Client = boto3.session.Session(botocore_session=session).client(
            "s3", endpoint_url=location.endpoint, region_name=location.region, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise InvalidInput(f"cannot configure the S3 client: {exc}") from exc
    return client


def code(exc: ClientError) -> str:
    """S3's error code (``NoSuchKey``, ``412``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(what: str, exc: Exception) -> StorageError:
    """The library error for a failed S3 call (after the retries), saying what to fix."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        why = (
            f"no usable AWS credentials ({exc}): set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role"
        )
    elif isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        why = (
            f"cannot reach the S3 endpoint ({exc}); check the s3:// URL's endpoint and the network"
        )
    elif isinstance(exc, ClientError) and code(exc) == "NoSuchBucket":
        bucket = exc.response.get("Error", {}).get("BucketName")
        named = f"the bucket {bucket}" if bucket else "the bucket"
        why = f"{named} does not exist: create it, or fix the s3:// URL"
    elif isinstance(exc, ClientError) and code(exc) in _REFUSED:
        why = (
            f"S3 refused the credentials ({exc}): check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) and the bucket's policy"
        )
    else:
        why = str(exc)
    return StorageError(f"{what}: {why}")
