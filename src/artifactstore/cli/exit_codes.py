"""The one table from the error tree to process exit codes (docs/cli.md).

0 success, 1 operation failed, 2 usage error, 3 integrity failure; 130 (128 +
SIGINT, as shells report it) when Ctrl-C stopped the command.
"""

from __future__ import annotations

from artifactstore.errors import (
    ArtifactStoreError,
    IntegrityError,
    InvalidName,
    InvalidReference,
    InvalidSetting,
    Locked,
)

__all__ = ["FAILED", "INTEGRITY", "INTERRUPTED", "OK", "USAGE", "exit_code"]

OK, FAILED, USAGE, INTEGRITY = 0, 1, 2, 3
INTERRUPTED = 130

_TABLE: tuple[tuple[type[ArtifactStoreError], int], ...] = (
    (IntegrityError, INTEGRITY),
    (InvalidReference, USAGE),  # a malformed argument on the command line
    (InvalidName, USAGE),
    (InvalidSetting, USAGE),  # a malformed setting: the command cannot start
    (Locked, FAILED),  # legal hold or retention lock: the operation failed, stated on stderr
    (ArtifactStoreError, FAILED),
)


def exit_code(exc: ArtifactStoreError) -> int:
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code
    return FAILED
