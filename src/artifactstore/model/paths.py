"""File paths inside a package (rules in docs/architecture.md, "Names and paths").

A package must extract on any file system, so a path is refused if any
platform would read it differently: traversal, absolute forms, backslashes,
control characters, non-NFC text, Windows-reserved names and characters.
Clients run the same check again before writing: a pull never trusts paths.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from artifactstore.errors import InvalidPath

__all__ = ["MAX_PATH_BYTES", "PackagePath", "check_unique"]

MAX_PATH_BYTES = 1024
_RESERVED = re.compile(r"(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(?:\..*)?", re.IGNORECASE)
_FORBIDDEN_CHARS = frozenset('<>:"|?*\\')


#: The first character a path may not hold: C0/C1 controls, DEL, or one Windows forbids.
_BAD_CHAR = re.compile('[\x00-\x1f\x7f-\x9f<>:"|?*\\\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _reason(path: str) -> str | None:
    # Regular expressions and ASCII short cuts instead of a Python loop per
    # character: a 10,000-file push validates every path.
    if not path:
        return "is empty"
    if path.isascii():  # one byte per character, valid UTF-8, always NFC
        if len(path) > MAX_PATH_BYTES:
            return f"is longer than {MAX_PATH_BYTES} bytes"
    else:
        if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
            return f"is longer than {MAX_PATH_BYTES} bytes"
        if _SURROGATE.search(path):
            return "is not valid UTF-8"
        if not unicodedata.is_normalized("NFC", path):
            return "is not NFC-normalised"
    if path.startswith("/"):
        return "is absolute"
    bad = _BAD_CHAR.search(path)
    if bad is not None:
        ch = bad.group()
        if ch in _FORBIDDEN_CHARS:
            return f"contains the character {ch!r}"
        return "contains a control character"
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return "has an empty, '.' or '..' segment"
        if segment[-1] in ". ":
            return f"has a segment ending in a dot or space ({segment!r})"
        if _RESERVED.fullmatch(segment):
            return f"has a segment Windows reserves ({segment!r})"
    return None


@dataclass(frozen=True, slots=True, order=True)
class PackagePath:
    """A validated relative path; ordering is by the UTF-8 string (manifest order)."""

    value: str

    def __post_init__(self) -> None:
        reason = _reason(self.value)
        if reason is not None:
            raise InvalidPath(f"file path {self.value[:200]!r} {reason}")

    @property
    def parts(self) -> list[str]:
        return self.value.split("/")

    def __str__(self) -> str:
        return self.value


def check_unique(paths: Iterable[PackagePath]) -> None:
    """Refuse two paths equal after case folding, or a file that is also a directory."""
    seen: dict[str, str] = {}
    dirs: dict[str, str] = {}
    for p in paths:
        key = p.value.casefold()
        if key in seen:
            raise InvalidPath(
                f"file paths {seen[key]!r} and {p.value!r} collide on a case-insensitive "
                "file system"
            )
        seen[key] = p.value
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:i]), p.value)
    for key, original in seen.items():
        if key in dirs:
            raise InvalidPath(f"file path {original!r} is also a directory of {dirs[key]!r}")
