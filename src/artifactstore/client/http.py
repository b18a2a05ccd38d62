"""HTTP to an artifact-store server: one client, the answer -> exception mapping, retries.

Every response of 400 or more becomes the exception of its problem ``code``
(``errors.py``; the server maps each exception to its code once), so a
remote caller sees the same errors a local one does. What is not a problem
document (the empty body of a ``HEAD``, a proxy's HTML 502) is mapped by its
status, and every transport failure becomes a :class:`~artifactstore.errors.RemoteError`
that names its cause and the setting to check: a refused connection is not
the store's storage failing, and a rejected token is not an internal error.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, get_args, get_origin

import httpx

from artifactstore import errors
from artifactstore.errors import ArtifactStoreError

__all__ = ["HttpClient", "error_from"]

#: Requests that change nothing, so repeating one after a dropped connection is safe.
_RETRY_ONCE = frozenset({"GET", "HEAD", "OPTIONS"})

#: The class of an error answer that names no code (a ``HEAD`` has no body), by status:
#: the inverse of ``server/problems.py`` where it is one-to-one.
_BY_STATUS: dict[int, type[ArtifactStoreError]] = {
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.LimitExceeded,
    422: errors.InvalidInput,
    423: errors.Locked,
    429: errors.TooManyRequests,
}

#: Constructor arguments whose problem-body key differs from their name.
_BODY_KEYS = {"digests": "missing"}
#: Constructor arguments a header carries too (the only place for a bodiless answer).
_HEADERS = {"retry_after": "retry-after", "offset": "upload-offset"}


def _codes() -> dict[str, type[ArtifactStoreError]]:
    """Every class of the error tree by its code (a subclass of a subclass too)."""
    out: dict[str, type[ArtifactStoreError]] = {}
    todo: list[type[ArtifactStoreError]] = [ArtifactStoreError]
    while todo:
        cls = todo.pop()
        out.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return out


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The problem document of an answer, or None when it is not one (no body, HTML)."""
    try:
        body = response.json()
    except ValueError:  # no body, HTML, truncated or not UTF-8
        return None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return body
    return None


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` from the wire as the constructor argument's type; a neutral value when
    absent. Raises (ValueError, TypeError) on a value of the wrong shape."""
    if annotation is int:
        return 0 if value is None else int(value)
    if annotation is float:
        return 0.0 if value is None else float(value)
    if annotation is str:
        return "" if value is None else str(value)
    if type(None) in get_args(annotation):  # optional: None is acceptable
        return value
    if get_origin(annotation) is not None:  # Sequence[...], list[...]: a JSON list
        return list(value) if isinstance(value, list) else []
    return value


def _construct(
    cls: type[ArtifactStoreError],
    detail: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> ArtifactStoreError:
    """An instance of ``cls``, its extra constructor arguments taken from the problem
    body (or a header) by name. Never raises: an answer the class cannot be built
    from (a hostile body, a class with arguments nobody foresaw) still gives an
    exception of the right class and code, without those attributes."""
    try:
        params = list(inspect.signature(cls, eval_str=True).parameters.values())[1:]
        kwargs: dict[str, Any] = {}
        for p in params:
            value = body.get(_BODY_KEYS.get(p.name, p.name))
            if value is None and p.name in _HEADERS:
                value = headers.get(_HEADERS[p.name])
            if value is None and p.default is not inspect.Parameter.empty:
                continue
            kwargs[p.name] = _coerce(value, p.annotation)
        return cls(detail, **kwargs)
    except Exception:  # whatever the answer held, the caller gets its code
        exc = cls.__new__(cls)
        ArtifactStoreError.__init__(exc, detail)
        return exc


def error_from(response: httpx.Response, *, url: str, token_sent: bool) -> ArtifactStoreError:
    """The exception an error answer stands for, its detail naming the cause and what to
    check (``ARTIFACTSTORE_TOKEN`` for credentials, ``ARTIFACTSTORE_URL`` for a proxy).

    A problem whose code the tree lacks (the HTTP layer's own, ``docs/errors.md``, or a
    newer server's) keeps that code, as the class its status maps to (else the base)."""
    status = f"{response.status_code} {response.reason_phrase}".strip()
    body = _problem(response)
    if body is None:
        # An empty body (a HEAD's) says only its status; anything else that is not a
        # problem (HTML, plain text) is some other server's answer, whatever its status.
        if response.status_code == 503 and not response.content:
            return errors.ServerNotReady(
                f"{url} answered {status}: its database or storage is down "
                f"({url}/ready names which); retry once it is back"
            )
        cls = None if response.content else _BY_STATUS.get(response.status_code)
        if cls is None and not response.content:
            return errors.BadResponse(
                f"{url} answered {status} with no explanation (the log of the server, or of "
                "a proxy in front of it, says why)"
            )
        if cls is None:
            return errors.BadResponse(
                f"{url} answered {status} without a problem document (a proxy in front of "
                "it, or not an artifact-store server? check ARTIFACTSTORE_URL)"
            )
        exc = _construct(cls, f"{url} answered {status}", {}, response.headers)
    else:
        code = str(body["code"])
        cls = _CODES.get(code) or _BY_STATUS.get(response.status_code) or ArtifactStoreError
        exc = _construct(cls, str(body.get("detail") or status), body, response.headers)
        exc.code = code
    _explain(exc, url, token_sent)
    return exc


def _explain(exc: ArtifactStoreError, url: str, token_sent: bool) -> None:
    """Name the setting to check where the server's words cannot (it knows no variables)."""
    detail = exc.detail
    if isinstance(exc, errors.Unauthenticated):
        detail = detail.removeprefix(f"{url} answered ")  # a bodiless answer: its status
        exc.detail = (
            f"{url} refused the token ({detail}): check ARTIFACTSTORE_TOKEN"
            if token_sent
            else f"{url} needs a token and none was given: set ARTIFACTSTORE_TOKEN"
        )
    elif isinstance(exc, errors.Forbidden):
        exc.detail = f"{detail}: the token (ARTIFACTSTORE_TOKEN) lacks the scope this needs"
    elif isinstance(exc, errors.TooManyRequests):
        wait = getattr(exc, "retry_after", 0)
        exc.detail = f"{detail}; retry after {wait} s" if wait else f"{detail}; retry later"
    exc.args = (exc.detail,)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception httpx (and httpcore) wrapped."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _transport_error(exc: httpx.TransportError, url: str, timeout: float) -> ArtifactStoreError:
    """A failure below HTTP as the client-side error that names its cause."""
    cause = _root_cause(exc)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return errors.InvalidInput(
            f"{url} is not an http:// or https:// URL: check ARTIFACTSTORE_URL (or --server)"
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return errors.ServerTimeout(
            f"no connection to {url} within {min(timeout, 10.0):g} s: check ARTIFACTSTORE_URL "
            "(or --server) and the network"
        )
    if isinstance(exc, httpx.TimeoutException):
        return errors.ServerTimeout(
            f"{url} sent nothing for {timeout:g} s: the server is overloaded or stuck "
            "(a longer wait: ARTIFACTSTORE_TIMEOUT or --timeout)"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return errors.TlsFailure(
            f"{url} presented a certificate this client does not trust "
            f"({cause.verify_message}): give its CA in SSL_CERT_FILE, or check ARTIFACTSTORE_URL"
        )
    if isinstance(cause, ssl.SSLError):
        return errors.TlsFailure(
            f"TLS with {url} failed ({cause.reason or cause}): does the server speak "
            "https there? check the scheme and port in ARTIFACTSTORE_URL (or --server)"
        )
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
    if isinstance(exc, httpx.ConnectError):
        return errors.ServerUnreachable(
            f"cannot connect to {url} ({reason.lower()}): is the server running? "
            "check ARTIFACTSTORE_URL (or --server)"
        )
    return errors.ServerUnreachable(
        f"the connection to {url} broke off ({reason or type(exc).__name__}): run the command again"
    )


_CODES = _codes()


class HttpClient:
    """One connection pool to ``url``; requests raise the server's problems as exceptions."""

    def __init__(self, url: str, *, token: str | None, timeout: float, connections: int) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token_sent = bool(token)
        headers = {"User-Agent": "artifactstore-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                limits=httpx.Limits(max_connections=connections),
                # A server with PRESIGN_DOWNLOADS answers a blob GET with 307 to the object
                # store; httpx drops the Authorization header on the way to another origin.
                follow_redirects=True,
            )
        except httpx.InvalidURL as exc:
            raise errors.InvalidInput(
                f"{url!r} is not a server URL ({exc}): check ARTIFACTSTORE_URL (or --server)"
            ) from None

    def close(self) -> None:
        self._http.close()

    def _check(self, response: httpx.Response, *, api: bool) -> None:
        """Raise what an answer that is not a success stands for; ``api``: the answer is
        the API's own (JSON), so a web page means a proxy or login page answered."""
        if response.status_code >= 400:
            response.read()
            raise error_from(response, url=self.url, token_sent=self._token_sent)
        if response.is_redirect:  # httpx follows none: a proxy or a URL to correct
            where = response.headers.get("location", "elsewhere")
            raise errors.BadResponse(
                f"{self.url} redirects to {where}: set ARTIFACTSTORE_URL (or "
                "--server) to the server's own address"
            )
        if api and response.headers.get("content-type", "").startswith("text/html"):
            raise errors.BadResponse(
                f"{self.url} answered with a web page, not the artifact-store API (a proxy or "
                "login page in front of it?): check ARTIFACTSTORE_URL (or --server)"
            )

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
            raise _transport_error(exc, self.url, self.timeout) from exc
        self._check(response, api=True)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kw: Any) -> Iterator[httpx.Response]:
        """A streamed response (status checked before the body); transport errors, also
        while the caller reads the body, as the RemoteError that names their cause."""
        try:
            with self._http.stream(method, path, **kw) as response:
                self._check(response, api=False)
                yield response
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url, self.timeout) from exc
