"""RemoteStore: the library's verbs over HTTP, for the CLI's remote mode.

It mirrors :class:`artifactstore.store.Store` where a remote caller can do
the same thing, and it trusts the server no more than it must: pulled bytes
are hashed against the manifest, paths are re-validated before writing, and
``verify_chain`` re-computes the event hashes on the client.

Pushes upload only what the server lacks (the commit's 409 names it), with N
parallel streams; small files go in batches (``POST /v1/blobs/batch``, one
pack per batch on the server), large files through resumable sessions whose URLs are
remembered in a small state file, so an interrupted push continues from the
server's offsets instead of starting again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Unpack
from urllib.parse import quote

import httpx

from artifactstore import errors
from artifactstore.client.files import (
    pull_into,
)
from artifactstore.client.http import HttpClient
from artifactstore.client.remote_log import RemoteLog
from artifactstore.client.remote_push import RemotePush
from artifactstore.client.uploads import Uploader
from artifactstore.dataplane.digests import DualHasher
from artifactstore.errors import ChainBroken, DigestMismatch, IntegrityError, InvalidInput
from artifactstore.model import records
from artifactstore.model.envelope import (
    Envelope,
    Signer,
)
from artifactstore.model.events import GENESIS, Event
from artifactstore.model.identity import Reference
from artifactstore.model.manifest import FileEntry
from artifactstore.model.retention import (
    RetentionPolicy,
    RetentionReport,
    RetentionSettings,
)
from artifactstore.model.versions import Page, VersionListing
from artifactstore.provenance.dsse import PackageRef, sign_package

__all__ = ["RemoteStore"]

CHUNK = 1 << 20
# How long ``follow_events`` keeps reconnecting after its stream broke off (a restart).
FOLLOW_RECONNECT_FOR = 60.0


def _check_manifest(listing: VersionListing, asked: Reference) -> None:
    """Trust a version's manifest only once it is the package the server names.

    Every file digest a pull, ``cat`` or ``verify`` checks comes from the
    manifest, so a server that sent other files' digests would get its bytes
    "verified": the manifest's canonical bytes must hash to the package digest
    (both algorithms) and name the version asked for. IntegrityError otherwise.
    """
    manifest = listing.require_manifest()
    actual = manifest.digests()
    if (actual.get(listing.digest.algorithm), actual.sha256) != (listing.digest, listing.sha256):
        raise DigestMismatch(
            f"{asked}: the manifest the server sent hashes to {actual.blake3}, not to the "
            f"package digest {listing.digest} it names; nothing in it is trusted"
        )
    sent = (manifest.namespace, manifest.name, manifest.version)
    if sent != (asked.namespace, asked.name, asked.version) or listing.reference != asked:
        raise IntegrityError(
            f"{asked}: the server answered with the manifest of "
            f"{manifest.namespace}/{manifest.name}:{manifest.version}"
        )


class RemoteStore(RemotePush, RemoteLog):
    """The subset of Store verbs a remote caller has, over the /v1 API (the log's in
    ``remote_log.py``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        parallel: int = 4,
        timeout: float = 300.0,
        state_path: Path | None = None,
    ) -> None:
        self._http = HttpClient(url, token=token, timeout=timeout, connections=parallel + 2)
        self.url = self._http.url
        self.parallel = parallel
        self._uploads = Uploader(self._http, parallel, state_path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self._http.request(method, path, **kw)

    @staticmethod
    def _path(ref: Reference) -> str:
        return f"/v1/packages/{ref.namespace}/{ref.name}/{ref.version}"

    # --- read -----------------------------------------------------------------------------

    def show(self, ref: str | Reference) -> VersionListing:
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        if r.version is None:
            raise InvalidInput("remote mode addresses versions as NS/NAME:VERSION")
        listing = VersionListing.from_json(self._request("GET", self._path(r)).json())
        _check_manifest(listing, r)
        return listing

    def query(self, **args: Unpack[records.QueryArgs]) -> Page[VersionListing]:
        """One page of live versions, newest first."""
        body = self._request("GET", "/v1/packages", params=records.query_params(args)).json()
        items = [VersionListing.from_json(item) for item in body["items"]]
        return Page(items, body.get("next_cursor") or None)

    def iter_query(self, **args: Unpack[records.QueryArgs]) -> Iterator[VersionListing]:
        """Every matching live version, newest first, paging under the hood."""

        def page(cursor: str | None) -> Page[VersionListing]:
            at = args.copy()
            at.setdefault("limit", 1000)
            at["cursor"] = cursor
            return self.query(**at)

        return records.pages(page)

    def stream_entry(self, entry: FileEntry) -> Iterator[bytes]:
        """A file's bytes by digest; raises DigestMismatch after the last chunk if wrong."""
        hasher = DualHasher(None)
        with self._http.stream("GET", f"/v1/blobs/{entry.blake3}") as response:
            for chunk in response.iter_bytes(CHUNK):
                hasher.update(chunk)
                yield chunk
        actual = hasher.result()
        if (actual.blake3, actual.sha256, actual.size) != (entry.blake3, entry.sha256, entry.size):
            raise DigestMismatch(
                f"{entry.path}: received bytes hash to {actual.blake3}, expected {entry.blake3}"
            )

    def read_file(self, ref: str | Reference, path: str) -> Iterator[bytes]:
        record = self.show(ref)
        entry = next((f for f in record.require_manifest().files if f.path.value == path), None)
        if entry is None:
            raise errors.PackageNotFound(f"{record.reference} has no file {path!r}")
        return self.stream_entry(entry)

    def pull(
        self,
        ref: str | Reference,
        dest: str | Path,
        *,
        progress: records.Progress = records.no_progress,
        force: bool = False,
    ) -> VersionListing:
        """Every file under ``dest``, each digest verified; all or nothing; an existing
        file is refused (Conflict) unless ``force``."""
        record = self.show(ref)
        pull_into(Path(dest), record.require_manifest(), self.stream_entry, progress, force=force)
        return record

    def verify(self, ref: str | Reference | None = None) -> records.VerifyReport:
        """Download and re-hash one version's bytes (``--all`` runs on the server host)."""
        if ref is None:
            raise InvalidInput("verify --all re-reads storage and runs on the server host")
        report = records.VerifyReport()
        for entry in self.show(ref).require_manifest().files:
            report.blobs_checked += 1
            try:
                for _chunk in self.stream_entry(entry):
                    pass
                report.bytes_checked += entry.size
            except DigestMismatch as exc:
                report.damaged.append({"digest": str(entry.blake3), "problem": exc.detail})
        return report

    # --- write ----------------------------------------------------------------------------

    def delete(self, ref: str | Reference) -> VersionListing:
        record = self.show(ref)
        self._request("DELETE", self._path(record.reference))
        return record

    def register_schema(self, variant: str, schema: Any) -> bool:
        response = self._request("PUT", f"/v1/schemas/{quote(variant, safe='')}", json=schema)
        return response.status_code == 201

    def get_schema(self, variant: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/v1/schemas/{quote(variant, safe='')}"
        ).json()
        return result

    def list_schemas(self) -> list[dict[str, str]]:
        items: list[dict[str, str]] = self._request("GET", "/v1/schemas").json()["items"]
        return items

    def create_token(
        self, name: str, scopes: list[str], *, expires_in: float | None = None
    ) -> tuple[records.TokenInfo, str]:
        body = self._request(
            "POST", "/v1/tokens", json={"name": name, "scopes": scopes, "expires_in": expires_in}
        ).json()
        secret = body.pop("secret")
        return records.TokenInfo.from_json(body), secret

    def list_tokens(self) -> list[records.TokenInfo]:
        items = self._request("GET", "/v1/tokens").json()["items"]
        return [records.TokenInfo.from_json(i) for i in items]

    def revoke_token(self, token_id: str) -> records.TokenInfo:
        body = self._request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}").json()
        return records.TokenInfo.from_json(body)

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> records.GcReport:
        if grace is not None:
            raise InvalidInput("--grace is the server's setting; remote gc uses it as configured")
        body = self._request(
            "POST", "/v1/admin/gc", params={"dry_run": str(dry_run).lower()}
        ).json()
        return records.GcReport.from_json(body)

    # --- storage tiers -------------------------------------------------------------------

    def tier_status(self, ref: str | Reference) -> list[records.BlobTier]:
        body = self._request("GET", self._version_path(ref) + "/tier").json()
        return records.TierReport.from_json(body).blobs

    def tier_move(self, ref: str | Reference, to: str) -> records.TierReport:
        path = self._version_path(ref) + "/tier"
        return records.TierReport.from_json(self._request("POST", path, json={"to": to}).json())

    def tier_restore(self, ref: str | Reference) -> records.TierReport:
        path = self._version_path(ref) + "/restore"
        return records.TierReport.from_json(self._request("POST", path).json())

    # --- retention and legal holds ----------------------------------------------------------

    def set_retention(
        self, namespace: str, package: str | None, policy: RetentionPolicy | None
    ) -> RetentionSettings:
        body = self._request(
            "PUT",
            f"/v1/namespaces/{quote(namespace, safe='')}/retention",
            json={"package": package, "policy": None if policy is None else policy.to_json()},
        ).json()
        return RetentionSettings.from_json(body)

    def retention_settings(self, namespace: str) -> RetentionSettings:
        body = self._request("GET", f"/v1/namespaces/{quote(namespace, safe='')}/retention")
        return RetentionSettings.from_json(body.json())

    def lock_retention(self, namespace: str, keep_days: float) -> RetentionSettings:
        body = self._request(
            "PUT",
            f"/v1/namespaces/{quote(namespace, safe='')}/retention/lock",
            json={"keep_days": keep_days},
        ).json()
        return RetentionSettings.from_json(body)

    def retention_plan(self, namespace: str | None = None) -> RetentionReport:
        return self.apply_retention(namespace, dry_run=True)

    def apply_retention(
        self, namespace: str | None = None, *, dry_run: bool = False
    ) -> RetentionReport:
        params = {"dry_run": str(dry_run).lower()}
        if namespace:
            params["namespace"] = namespace
        body = self._request("POST", "/v1/retention/apply", params=params).json()
        return RetentionReport.from_json(body)

    def _version_path(self, ref: str | Reference) -> str:
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        if r.version is None:
            raise InvalidInput("remote mode addresses versions as NS/NAME:VERSION")
        return self._path(r)

    def place_hold(self, ref: str | Reference, reason: str) -> records.Hold:
        body = self._request(
            "POST", self._version_path(ref) + "/holds", json={"reason": reason}
        ).json()
        return records.Hold.from_json(body)

    def release_hold(
        self, ref: str | Reference, reason: str, *, hold_id: int | None = None
    ) -> records.Hold:
        payload: dict[str, Any] = {"reason": reason}
        if hold_id is not None:
            payload["id"] = hold_id
        body = self._request("DELETE", self._version_path(ref) + "/holds", json=payload).json()
        return records.Hold.from_json(body)

    def list_holds(
        self, ref: str | Reference | None = None, *, include_released: bool = False
    ) -> list[records.Hold]:
        params = {"all": str(include_released).lower()}
        path = "/v1/holds" if ref is None else self._version_path(ref) + "/holds"
        items = self._request("GET", path, params=params).json()["items"]
        return [records.Hold.from_json(i) for i in items]

    def events(self, after: int = 0, limit: int | None = None) -> list[Event]:
        out: list[Event] = []
        while limit is None or len(out) < limit:
            page = min(1000, limit - len(out)) if limit is not None else 1000
            body = self._request("GET", "/v1/events", params={"after": after, "limit": page}).json()
            batch = [_event_from(e) for e in body["events"]]
            out.extend(batch)
            if len(batch) < page:
                break
            after = batch[-1].seq
        return out

    def follow_events(self, after: int = 0) -> Iterator[Event]:
        """Every event after ``after``, then each one the server commits, for as long as
        the caller iterates (``GET /v1/events/stream``).

        A dropped connection is resumed with ``Last-Event-ID`` = the last seq
        yielded, so nothing is missed or repeated; reconnecting is retried for
        ``FOLLOW_RECONNECT_FOR`` seconds (a server restart), then the error is
        raised. A first connection that fails raises at once (a wrong URL)."""
        from httpx_sse import EventSource, SSEError

        # The server sends a keep-alive comment every 15 s: a quiet stream is no timeout.
        timeout = httpx.Timeout(max(self._http.timeout, 60.0), connect=10.0)
        connected, give_up_at, pause = False, 0.0, 0.1
        while True:
            try:
                with self._http.stream(
                    "GET",
                    "/v1/events/stream",
                    headers={"Last-Event-ID": str(after)},
                    timeout=timeout,
                ) as response:
                    connected, give_up_at, pause = True, 0.0, 0.1
                    for message in EventSource(response).iter_sse():
                        if not message.data:  # a keep-alive or a retry hint
                            continue
                        event = _event_from(message.data)
                        if event.seq > after:
                            after = event.seq
                            yield event
            except SSEError as exc:
                raise errors.BadResponse(
                    f"{self.url} did not answer with an event stream ({exc})"
                ) from None
            except (errors.ServerUnreachable, errors.ServerTimeout):
                now = time.monotonic()
                give_up_at = give_up_at or now + FOLLOW_RECONNECT_FOR
                if not connected or now > give_up_at:
                    raise
            time.sleep(pause)  # the stream ended (a server shutting down) or broke off
            pause = min(pause * 2, 2.0)

    def verify_chain(self) -> int:
        """Re-compute every event hash on the client; raises ChainBroken at the first bad one."""
        prev, expected = GENESIS, 1
        for e in self.events():
            if e.seq != expected:
                raise ChainBroken(f"event {expected} is missing", expected)
            if e.prev_hash != prev or e.computed_hash() != e.hash:
                raise ChainBroken(f"event {e.seq} does not verify", e.seq)
            prev, expected = e.hash, expected + 1
        return expected - 1

    def namespace_settings(self, namespace: str) -> dict[str, Any]:
        """The namespace's settings and ``used_bytes`` (what its quota counts)."""
        body: dict[str, Any] = self._request(
            "GET", f"/v1/namespaces/{quote(namespace, safe='')}"
        ).json()
        return body

    def set_namespace_settings(self, namespace: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the namespace's settings (all of them: read, modify, then send back)."""
        body: dict[str, Any] = self._request(
            "PUT", f"/v1/namespaces/{quote(namespace, safe='')}", json=dict(settings)
        ).json()
        return body

    # --- signatures -------------------------------------------------------------------------

    def signatures(self, ref: str | Reference) -> list[Envelope]:
        items = self._request("GET", self._version_path(ref) + "/signatures").json()["items"]
        return [Envelope.from_json(item) for item in items]

    def add_signature(self, ref: str | Reference, envelope: Envelope) -> bool:
        response = self._request(
            "POST", self._version_path(ref) + "/signatures", json=envelope.to_json()
        )
        return response.status_code == 201

    def sign(self, ref: str | Reference, key: Signer) -> Envelope:
        """Sign the manifest the server sent, once it hashes to the package digest the
        server names (``show`` checks): the key never leaves this process."""
        listing = self.show(ref)
        package = PackageRef(str(listing.reference), listing.digest.hex, listing.sha256.hex)
        envelope = sign_package(package, key)
        self.add_signature(listing.reference, envelope)
        return envelope


def _event_from(item: Any) -> Event:
    """One event as the server sent it (its JSON form, or that as text in a stream's
    ``data:``); a malformed one is the server's fault, said so."""
    try:
        return Event.from_json(json.loads(item) if isinstance(item, str) else item)
    except (ValueError, TypeError, KeyError) as exc:
        raise errors.ArtifactStoreError(f"the server sent a malformed event: {exc}") from exc
