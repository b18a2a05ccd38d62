"""The conformance suite's tests of keys named up front (``WriteBatch.writer(key)``).

A caller that knows an object's key before its bytes (a client that sent the
digest) names it, so that a backend that cannot rename (S3) writes there
directly. The promises stay those of every write: nothing visible before the
batch commits, the first copy of a key wins, nothing left behind; and a
commit under another key is refused. :class:`BackendContract` includes these.
"""

from __future__ import annotations

import pytest

from artifactstore.errors import StorageError
from artifactstore.testing.targets import ContractTarget, assert_absent, assert_holds, payload

__all__ = ["NamedKeyContract"]

MiB = 1 << 20


class NamedKeyContract:
    """Mixed into ``BackendContract``, whose ``target`` fixture checks for leftovers."""

    # 9 MiB: past one S3 part, so the upload at the named key is a multipart upload.
    @pytest.mark.parametrize("size", [5000, 9 * MiB])
    def test_a_named_key_is_written_there_and_the_first_copy_wins(
        self, target: ContractTarget, size: int
    ) -> None:
        b = target.backend
        data = payload(40, size)
        for content in (data, payload(41, size)):  # the second finds the key taken
            batch = b.batch()
            writer = batch.writer("contract/named")
            for start in range(0, size, MiB):
                writer.write(content[start : start + MiB])
            writer.commit("contract/named")
            if content is data:
                assert_absent(b, "contract/named")
            batch.commit()
            assert_holds(b, "contract/named", data)
            assert target.staging() == []
        b.delete("contract/named")

    @pytest.mark.parametrize("size", [5000, 9 * MiB])
    def test_a_named_writer_refuses_another_key(self, target: ContractTarget, size: int) -> None:
        b = target.backend
        batch = b.batch()
        writer = batch.writer("contract/named-a")
        writer.write(payload(42, size))
        with pytest.raises(StorageError, match="committed as"):
            writer.commit("contract/named-b")
        batch.commit()
        assert list(b.list()) == []
        assert target.staging() == []
        cancelled = b.batch()
        writer = cancelled.writer("contract/named-a")
        writer.write(payload(43, size))
        cancelled.cancel()
        assert list(b.list()) == []
        assert target.staging() == []
