"""The push verbs of :class:`~artifactstore.client.remote.RemoteStore`.

The commit is the existence check: its 409 names the blobs the namespace
lacks, which are then sent (small ones in batches, ``client/batches.py``)
before the commit is sent again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import httpx

from artifactstore import errors
from artifactstore.client.files import collect_files, manifest_for, version_reference
from artifactstore.client.uploads import Uploader, hash_file, run_parallel
from artifactstore.model import records
from artifactstore.model.clock import utc_now
from artifactstore.model.envelope import SIGNATURE_HEADER, Envelope, signature_header
from artifactstore.model.identity import BlobDigests, Reference
from artifactstore.model.manifest import Manifest
from artifactstore.model.records import LocalFile
from artifactstore.model.versions import PushResult, VersionListing
from artifactstore.provenance.dsse import PackageRef, sign_package

__all__ = ["RemotePush"]

#: Commits a push tries: the existence check, after the uploads, after a GC race.
_COMMIT_ROUNDS = 3


class RemotePush:
    """``push`` of :class:`~artifactstore.client.remote.RemoteStore`."""

    parallel: int
    _uploads: Uploader

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        raise NotImplementedError  # RemoteStore's

    def add_signature(self, ref: str | Reference, envelope: Envelope) -> bool:
        raise NotImplementedError  # RemoteStore's

    def push(
        self, ref: str | Reference, paths: Sequence[str | Path], **args: Unpack[records.PushArgs]
    ) -> PushResult[VersionListing]:
        """Upload what the server lacks, then commit the manifest (retrying once if GC raced)."""
        progress = args.get("progress", records.no_progress)
        walked = args.get("walked")
        follow_symlinks = args.get("follow_symlinks", False)
        r = version_reference(ref)
        files = (
            list(walked)
            if walked is not None
            else collect_files([Path(p) for p in paths], follow_external_symlinks=follow_symlinks)
        )
        hashed, stop = args.get("hash_progress", records.no_progress), threading.Event()
        digests = run_parallel(
            lambda f: hash_file(f.source, hashed, stop), files, self.parallel, stop
        )
        manifest = manifest_for(
            r,
            files,
            digests,
            metadata=args.get("metadata"),
            variant=args.get("variant"),
            annotations=args.get("annotations"),
            producer=args.get("producer", "artifactstore"),
            created=utc_now(),
        )
        key = args.get("sign")
        envelopes = [] if key is None else [sign_package(PackageRef.of(manifest), key)]
        by_digest = {str(d.blake3): (f, d) for f, d in zip(files, digests, strict=True)}
        response, uploaded = self._commit_uploading(manifest, envelopes, by_digest, progress)
        body = response.json()
        listing = VersionListing.from_json(body)
        if key is not None and listing.digest != manifest.digests().blake3:
            # Identical content was already there under its own manifest: sign that one.
            stored = PackageRef(str(listing.reference), listing.digest.hex, listing.sha256.hex)
            self.add_signature(listing.reference, sign_package(stored, key))
        return PushResult(listing, body["created_now"], uploaded)

    def _commit_uploading(
        self,
        manifest: Manifest,
        envelopes: Sequence[Envelope],
        by_digest: Mapping[str, tuple[LocalFile, BlobDigests]],
        progress: records.Progress,
    ) -> tuple[httpx.Response, int]:
        """Commit; the 409 names the blobs the namespace lacks: send them, commit again.

        The commit is the existence check: one request for any number of files,
        where a ``HEAD`` per file cost a round trip each (10,000 of them for a
        tree of small files), and a push of content the server holds sends no
        bytes at all. The 409 counts blobs other namespaces hold as missing
        (a digest is not a capability), so their bytes are sent: proof of
        possession. Once more if GC collected a blob between upload and commit.
        """
        uploaded = 0
        for attempt in range(_COMMIT_ROUNDS):
            try:
                response = self._commit(manifest, envelopes)
            except errors.MissingBlobs as exc:
                wanted = {d: by_digest[d] for d in exc.digests if d in by_digest}
                if attempt == _COMMIT_ROUNDS - 1 or not wanted:
                    raise
                if attempt == 0:  # what the server holds counts as sent, once
                    progress(sum(d.size for b, (_, d) in by_digest.items() if b not in wanted))
                shown = progress if attempt == 0 else records.no_progress
                uploaded += self._uploads.upload_missing(str(manifest.namespace), wanted, shown)
                continue
            if attempt == 0:
                progress(sum(d.size for _, d in by_digest.values()))
            return response, uploaded
        raise AssertionError("unreachable: the last round returns or raises")

    def _commit(self, manifest: Manifest, envelopes: Sequence[Envelope]) -> httpx.Response:
        """PUT the manifest; each envelope travels in an ``Artifactstore-Signature`` header."""
        headers = [("Content-Type", "application/cbor")]
        headers += [(SIGNATURE_HEADER, signature_header(e)) for e in envelopes]
        return self._request(
            "PUT",
            f"/v1/packages/{manifest.namespace}/{manifest.name}/{manifest.version}",
            content=manifest.to_cbor(),
            headers=headers,
        )
