"""One request's bytes appended to an upload session, the session's claim renewed meanwhile.

``UploadService.begin_append`` (``services/uploads.py``) claims the session and
opens its staged body; a :class:`SessionAppend` writes the request's bytes,
checks the namespace's quota as they arrive, records durable checkpoints, and
on its end records the offset and releases the claim (completing a full
session). :class:`ClaimKeeper` renews a claim while its holder works.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from artifactstore.dataplane.uploads import StagedBody
from artifactstore.errors import ChecksumMismatch, QuotaExceeded, StorageError
from artifactstore.model.records import UploadSession

if TYPE_CHECKING:
    from artifactstore.services.uploads import UploadService

__all__ = ["CLAIM_RENEW", "ClaimKeeper", "SessionAppend"]

CLAIM_RENEW = 3.0
"""How often a live claim is renewed."""


class ClaimKeeper:
    """Renews one session's claim every CLAIM_RENEW seconds until stopped.

    With an ``owner`` (an append) it stops by itself once the owner is gone
    without finish() or abort() (a cancelled request), so such a claim still lapses.
    """

    def __init__(
        self, service: UploadService, upload_id: str, owner: SessionAppend | None = None
    ) -> None:
        self._service = service
        self._upload_id = upload_id
        self._owner: Callable[[], object | None] = (
            weakref.ref(owner) if owner is not None else lambda: service
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"upload-claim-{upload_id[:8]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(CLAIM_RENEW) and self._owner() is not None:
            with contextlib.suppress(Exception):  # a missed renewal is retried next round
                self._service.renew_claim(self._upload_id)

    def stop(self) -> None:
        self._stopped.set()


class SessionAppend:
    """One request's bytes appended to a session, its claim renewed meanwhile.

    ``quota`` is the namespace's (quota, used bytes) when it has a quota: the
    session's bytes may not take the namespace past it. Every
    ``checkpoint_every`` bytes (0: never) the bytes so far are made durable and
    their offset recorded, so that a crash mid-request keeps them.
    """

    def __init__(
        self,
        service: UploadService,
        session: UploadSession,
        body: StagedBody,
        *,
        quota: tuple[int, int] | None = None,
        checkpoint_every: int = 0,
    ) -> None:
        self._service = service
        self.session = session
        self._body = body
        self._quota = quota
        self._checkpoint_every = checkpoint_every
        self._checkpointed = 0  # bytes of this body recorded durable so far
        self._keeper = ClaimKeeper(service, session.id, self)

    @property
    def written(self) -> int:
        return self._body.written

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._quota is not None:
            quota, used = self._quota
            size = self.session.offset + self._body.written + len(data)
            if used + size > quota:
                raise QuotaExceeded(
                    f"namespace {self.session.namespace} holds {used} of its {quota} bytes; "
                    f"upload {self.session.id} would take it past its quota at "
                    f"{size} bytes (it keeps the {self.session.offset + self._body.written} "
                    "received): abort it, delete versions or raise the quota",
                    quota_bytes=quota,
                    used_bytes=used,
                )
        self._body.write(data)
        every = self._checkpoint_every
        if every and self._body.written - self._checkpointed >= every and not self._full():
            # Durable first, then the offset that points at the bytes (docs/architecture.md).
            self._service.checkpoint(self.session.id, self._body.sync())
            self._checkpointed = self._body.written

    def _full(self) -> bool:
        """Whether the session holds its whole length: finish() records and completes that
        offset itself. A checkpoint there, cut off by a crash, would leave a full session
        whose completion waits for the dead request's claim to lapse."""
        length = self.session.length
        return length is not None and self.session.offset + self._body.written == length

    def finish(self) -> UploadSession:
        """Flush, check the body checksum, record the new offset; complete when full."""
        self._keeper.stop()
        size = self._body.close()
        if not self._body.checksum_ok():
            self._service.release(self.session.id, self.session.offset, drop_hasher=True)
            raise ChecksumMismatch(
                f"the request body does not match its {self._body.checksum_algorithm} "
                "Upload-Checksum; "
                f"the upload stays at offset {self.session.offset}"
            )
        session = self._service.release(self.session.id, size)
        if session.length is not None and session.offset == session.length:
            self._service.complete(session.id)
            session = self._service.get(session.id)
        return session

    def abort(self) -> UploadSession:
        """The request broke off: keep (and acknowledge) what arrived, as tus asks."""
        self._keeper.stop()
        try:
            size = self._body.abort()
        except StorageError:
            return self._service.release(self.session.id, self.session.offset, drop_hasher=True)
        drop = self._body.checksum_algorithm is not None  # unverifiable partial body: discard it
        return self._service.release(
            self.session.id, self.session.offset if drop else size, drop_hasher=drop
        )
