"""A push parser of POSIX tar streams (ustar and pax) whose members are small regular files.

``POST /v1/blobs/batch`` receives its body in 1 MiB buffers on a worker
thread and must refuse a hostile stream as soon as it shows itself, without
spooling the body first: :class:`TarMembers` takes the buffers as they come
(``feed``) and hands each regular member, whole, to a callback. A member is
held in memory until its last byte, so ``max_member`` bounds the memory a
request can take. Everything that is not a regular file (links, devices,
directories, FIFOs, GNU extensions) is refused, as are headers with a bad
checksum, sizes that are not octal, and a stream that ends without the
end-of-archive marker (a cut-off body must not pass as a shorter batch).
"""

from __future__ import annotations

from collections.abc import Callable

from artifactstore.errors import InvalidInput, LimitExceeded

__all__ = ["BLOCK", "TarMembers"]

BLOCK = 512
#: The most bytes of pax extended-header records one member may carry.
MAX_PAX = 64 * 1024
_KINDS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"L": "GNU long name",
    b"K": "GNU long link name",
    b"S": "GNU sparse file",
}


def _octal(field: bytes, what: str) -> int:
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if not digits or any(c not in b"01234567" for c in digits):
        raise InvalidInput(f"not a POSIX tar stream: the {what} field is not an octal number")
    return int(digits, 8)


def _pax_records(data: bytes) -> dict[str, str]:
    """``LEN key=value\\n`` records (POSIX.1-2001); a malformed one refuses the stream."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space < 0 or not data[pos:space].isdigit():
            raise InvalidInput("not a POSIX tar stream: malformed pax extended header")
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if pos + length > len(data) or length <= space - pos or not record.endswith(b"\n"):
            raise InvalidInput("not a POSIX tar stream: malformed pax extended header")
        key, sep, value = record[:-1].partition(b"=")
        if not sep:
            raise InvalidInput("not a POSIX tar stream: malformed pax extended header")
        try:
            out[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise InvalidInput("pax extended header is not UTF-8") from None
        pos += length
    return out


class TarMembers:
    """Feed a tar stream in pieces; ``on_member(name, data)`` gets each regular file whole.

    Raises InvalidInput (422) for a stream that is not a POSIX tar of regular
    files, and LimitExceeded (413) for a member over ``max_member`` bytes or
    more than ``max_members`` members, before the member's data is received.
    """

    def __init__(
        self, on_member: Callable[[str, bytes], None], *, max_member: int, max_members: int
    ) -> None:
        self._on_member = on_member
        self._max_member = max_member
        self._max_members = max_members
        self._buf = bytearray()
        self._need = BLOCK  # bytes the current state waits for
        self._state = "header"  # header | data | pax | global | end
        self._name = ""
        self._size = 0
        self._pax: dict[str, str] = {}
        self.members = 0
        self._offset = 0  # of the current block in the stream, for messages

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._state == "end":
            self._trailer(data)
            return
        self._buf += data
        while len(self._buf) >= self._need and self._state != "end":
            need = self._need
            chunk = bytes(self._buf[:need])
            del self._buf[:need]
            self._step(chunk)
            self._offset += need
        if self._state == "end" and self._buf:
            rest, self._buf = bytes(self._buf), bytearray()
            self._trailer(rest)

    def close(self) -> None:
        """The stream ended: refuse it unless it ended with the end-of-archive marker."""
        if self._state != "end":
            if self._offset == 0 and not self._buf:
                raise InvalidInput("not a POSIX tar stream: the body is empty")
            raise InvalidInput(
                f"truncated tar stream: it ends at byte {self._offset + len(self._buf)} "
                "without the end-of-archive marker"
            )

    def _trailer(self, data: bytes | bytearray | memoryview) -> None:
        if any(bytes(data)):
            raise InvalidInput("data after the tar end-of-archive marker")

    def _step(self, chunk: bytes) -> None:
        if self._state == "header":
            self._header(chunk)
        elif self._state == "data":
            self._member_data(chunk)
        else:  # pax or global: records, padded to whole blocks
            records = _pax_records(chunk[: self._size])
            if self._state == "global":
                if "path" in records or "size" in records:
                    raise InvalidInput("a pax global header may not set path or size here")
            else:
                self._pax = records
            self._state, self._need = "header", BLOCK

    def _header(self, block: bytes) -> None:
        if not any(block):
            if self._pax:
                raise InvalidInput("truncated tar stream: a pax header has no member")
            self._state = "end"  # the rest must be zeros (the second block, record padding)
            return
        stored = _octal(block[148:156], "checksum")
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
        if stored not in (unsigned, signed):
            raise InvalidInput(
                f"not a POSIX tar stream: bad header checksum at byte {self._offset}"
            )
        if block[257:262] != b"ustar":
            raise InvalidInput("not a POSIX ustar or pax tar stream (no ustar magic)")
        kind = block[156:157]
        size = _octal(block[124:136], "size") if block[124] < 128 else -1
        if size < 0:
            raise InvalidInput("member sizes in base-256 are not accepted")
        if kind in (b"x", b"g"):
            if size > MAX_PAX:
                raise LimitExceeded(f"a pax header of {size} bytes is over the limit of {MAX_PAX}")
            self._state, self._size = ("pax" if kind == b"x" else "global"), size
            self._need = -(-size // BLOCK) * BLOCK
            if not self._need:
                self._state, self._need = "header", BLOCK
            return
        name = self._pax.get("path") or self._ustar_name(block)
        if "size" in self._pax:  # decimal, unlike the header's octal field
            digits = self._pax["size"]
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
                raise InvalidInput("not a POSIX tar stream: the pax size is not a number")
            size = int(digits)
        self._pax = {}
        if kind not in (b"0", b"\0"):
            what = _KINDS.get(kind, f"member of type {kind!r}")
            raise InvalidInput(f"member {name!r} is a {what}: a batch holds regular files only")
        self.members += 1
        if self.members > self._max_members:
            raise LimitExceeded(
                f"more than {self._max_members} members in one batch: split it into batches"
            )
        if size > self._max_member:
            raise LimitExceeded(
                f"member {name!r} is {size} bytes, over the batch member limit of "
                f"{self._max_member}: send it with POST /v1/blobs or an upload session "
                "(/v1/uploads)"
            )
        self._name, self._size = name, size
        self._state, self._need = "data", -(-size // BLOCK) * BLOCK
        if not size:
            self._member_data(b"")

    def _ustar_name(self, block: bytes) -> str:
        name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        raw = prefix + b"/" + name if prefix else name
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise InvalidInput("a member name is not UTF-8") from None

    def _member_data(self, chunk: bytes) -> None:
        self._state, self._need = "header", BLOCK
        self._on_member(self._name, chunk[: self._size])
