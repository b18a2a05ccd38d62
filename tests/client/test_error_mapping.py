"""The client's answer -> exception mapping never raises, whatever the class or the body.

It once called ``TooManyRequests(detail)`` without the ``retry_after`` the class
requires, and the CLI printed a traceback on every 429. These build real
``httpx.Response`` answers (no network) for every class of the error tree, for
a class with constructor arguments nobody foresaw, and for hostile bodies.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx
import pytest

from artifactstore import errors
from artifactstore.client.http import _construct, error_from
from artifactstore.errors import ArtifactStoreError

TREE = sorted(
    (
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, ArtifactStoreError)
    ),
    key=lambda c: c.code,
)


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {})


def mapped(response: httpx.Response) -> ArtifactStoreError:
    return error_from(response, url="http://server", token_sent=True)


@pytest.mark.parametrize("cls", TREE, ids=[c.code for c in TREE])
def test_every_code_maps_to_its_class(cls: type[ArtifactStoreError]) -> None:
    exc = mapped(answer(400, {"code": cls.code, "detail": "d"}, {"Retry-After": "5"}))
    assert type(exc) is cls and exc.code == cls.code
    assert "d" in exc.detail and str(exc) == exc.detail


@pytest.mark.parametrize("cls", TREE, ids=[c.code for c in TREE])
def test_hostile_extra_fields_still_give_the_class(cls: type[ArtifactStoreError]) -> None:
    junk = {"missing": "x", "offset": "abc", "holds": 7, "quota_bytes": [], "seq": {}}
    exc = mapped(answer(409, {"code": cls.code, "detail": "d", **junk}, {"Retry-After": "soon"}))
    assert isinstance(exc, cls) and exc.code == cls.code


def test_a_class_with_unforeseen_arguments_is_built() -> None:
    class Unforeseen(errors.Conflict):
        code = "unforeseen"

        def __init__(self, detail: str, widget: object, count: int) -> None:
            super().__init__(detail)
            if not isinstance(widget, dict):
                raise TypeError("a widget must be a dict")
            self.widget, self.count = widget, count

    exc = _construct(Unforeseen, "d", {"count": "3"}, {})
    assert type(exc) is Unforeseen and exc.detail == "d" and exc.code == "unforeseen"
    built = _construct(Unforeseen, "d", {"widget": {"a": 1}, "count": "3"}, {})
    assert isinstance(built, Unforeseen) and built.count == 3 and built.widget == {"a": 1}


def test_retry_after_and_offsets_come_from_headers() -> None:
    throttled = mapped(answer(429, b"", {"Retry-After": "12"}))
    assert isinstance(throttled, errors.TooManyRequests) and throttled.retry_after == 12
    assert "retry after 12 s" in throttled.detail
    moved = mapped(answer(409, {"code": "upload_offset_mismatch", "detail": "d", "offset": 7}))
    assert isinstance(moved, errors.UploadOffsetMismatch) and moved.offset == 7
    missing = mapped(answer(409, {"code": "missing_blobs", "detail": "d", "missing": ["a"]}))
    assert isinstance(missing, errors.MissingBlobs) and missing.digests == ["a"]


@pytest.mark.parametrize(
    ("response", "cls", "code"),
    [
        (
            answer(405, {"code": "method_not_allowed", "detail": "d"}),
            ArtifactStoreError,
            "method_not_allowed",
        ),
        (
            answer(422, {"code": "invalid_request", "detail": "d"}),
            errors.InvalidInput,
            "invalid_request",
        ),
        (answer(502, b"<html>Bad Gateway</html>"), errors.BadResponse, "bad_response"),
        (answer(404, b"<html>Not Found</html>"), errors.BadResponse, "bad_response"),
        (answer(404, b""), errors.NotFound, "not_found"),
        (answer(400, {"code": 5}), errors.BadResponse, "bad_response"),
        (answer(400, [1, 2]), errors.BadResponse, "bad_response"),
    ],
)
def test_answers_that_name_no_known_code(
    response: httpx.Response, cls: type[ArtifactStoreError], code: str
) -> None:
    exc = mapped(response)
    assert type(exc) is cls and exc.code == code
