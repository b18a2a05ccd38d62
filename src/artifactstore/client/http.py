"""HTTP to an artifact-store server: one client, the problem -> exception mapping, retries.

Every response of 400 or more becomes the exception of its problem ``code``
(``errors.py``; the server maps each exception to its code once), so a
remote caller sees the same errors a local one does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from artifactstore import errors
from artifactstore.errors import ArtifactStoreError

__all__ = ["HttpClient"]

_CODES: dict[str, type[ArtifactStoreError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ArtifactStoreError)
}


#: Requests that change nothing, so repeating one after a dropped connection is safe.
_RETRY_ONCE = frozenset({"GET", "HEAD", "OPTIONS"})


def _error_from(response: httpx.Response) -> ArtifactStoreError:
    try:
        body = response.json()
        code, detail = str(body.get("code", "")), str(body.get("detail", response.reason_phrase))
    except (ValueError, AttributeError):
        code, detail = "", f"HTTP {response.status_code} {response.reason_phrase}"
    cls = _CODES.get(code)
    if cls is errors.MissingBlobs:
        return errors.MissingBlobs(detail, body.get("missing", []))
    if cls is errors.InvalidMetadata:
        return errors.InvalidMetadata(detail, body.get("pointer", ""))
    if cls is errors.UploadOffsetMismatch:
        return errors.UploadOffsetMismatch(detail, int(body.get("offset", 0)))
    if cls is errors.ChainBroken:
        return errors.ChainBroken(detail, 0)
    if cls is errors.LegalHold:
        return errors.LegalHold(detail, body.get("holds") or [])
    if cls is errors.RetentionLocked:
        return errors.RetentionLocked(detail, body.get("locked_until"))
    if cls is errors.QuotaExceeded:
        return errors.QuotaExceeded(
            detail, int(body.get("quota_bytes", 0)), int(body.get("used_bytes", 0))
        )
    if cls is errors.RestoreRequired:
        return errors.RestoreRequired(
            detail, body.get("missing") or [], str(body.get("restore_status", ""))
        )
    if cls is not None:
        return cls(detail)
    if response.status_code == 404:
        return errors.NotFound(detail)
    if response.status_code in (401, 403):  # a HEAD's answer carries no problem body
        return (errors.Unauthenticated if response.status_code == 401 else errors.Forbidden)(detail)
    return ArtifactStoreError(f"server answered {response.status_code}: {detail}")


class HttpClient:
    """One connection pool to ``url``; requests raise the server's problems as exceptions."""

    def __init__(self, url: str, *, token: str | None, timeout: float, connections: int) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "artifactstore-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=connections),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            try:
                response = self._http.request(method, path, **kw)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if method not in _RETRY_ONCE:
                    raise
                # A pooled keep-alive connection the server closed (idle timeout,
                # restart) just as we reused it: a read answers nothing, so ask again
                # once, on a fresh connection.
                response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise errors.StorageError(f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        """A streamed response (status checked before the body); transport errors as
        StorageError."""
        try:
            with self._http.stream(method, path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                yield response
        except httpx.TransportError as exc:
            raise errors.StorageError(f"download from {self.url} failed: {exc}") from exc
