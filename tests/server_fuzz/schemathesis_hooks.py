"""Schemathesis hooks for the fuzz run (loaded by the schemathesis CLI through its config).

The tus PATCH body is ``application/offset+octet-stream``: raw bytes, sent as
schemathesis sends ``application/octet-stream``. Canonical CBOR manifests are
raw bytes too, and so is a batch upload's ``application/x-tar`` stream.
"""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/cbor", "application/x-tar"],
    "application/octet-stream",
)
