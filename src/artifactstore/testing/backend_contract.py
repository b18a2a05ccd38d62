"""The conformance suite every storage backend passes (STYLE habit 3).

One class of tests, :class:`BackendContract`, pins the behaviour that
:mod:`artifactstore.dataplane.protocol` promises: two-phase batched writes
(nothing visible before ``WriteBatch.commit()``, nothing left behind by
``cancel()``), the first copy of a key wins, ranged and streaming reads,
idempotent deletes, prefix listing, and concurrent commits of one key. A test
module runs it for its backends by providing one fixture, ``contract_target``,
and subclassing the suite; a new backend is one more fixture parameter (the
targets come from :mod:`artifactstore.testing.targets`)::

    @pytest.fixture(params=["memory", "local"])
    def contract_target(request: pytest.FixtureRequest, tmp_path: Path) -> ContractTarget:
        if request.param == "memory":
            return memory_target()
        return local_target(tmp_path / "storage")

    class TestBackendContract(BackendContract):
        pass

Every test deletes what it wrote. The ``target`` fixture checks at teardown
that the backend holds no object and no staging leftover, and fails the test
(a teardown error) when it does, so a leak in a backend or in a test cannot
pass unnoticed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest

from artifactstore.errors import BlobNotFound, StorageError
from artifactstore.testing.named_key_contract import NamedKeyContract
from artifactstore.testing.targets import (
    ContractTarget,
    assert_absent,
    assert_holds,
    content_key,
    get,
    payload,
    put,
    traced_peak,
)

__all__ = ["BackendContract"]

MiB = 1 << 20


class BackendContract(NamedKeyContract):
    """The tests every backend passes; subclass it and provide ``contract_target``."""

    @pytest.fixture
    def target(self, contract_target: ContractTarget) -> Iterator[ContractTarget]:
        backend = contract_target.backend
        before = sorted(backend.list())
        assert before == [], f"the backend under test must start empty, it holds {before[:5]}"
        yield contract_target
        left = sorted(backend.list())
        staging = contract_target.staging()
        for key in left:  # keep one leak from cascading into the next test
            backend.delete(key)
        if left or staging:
            pytest.fail(
                f"test left bytes behind: {len(left)} objects {left[:5]}, "
                f"{len(staging)} staging entries {staging[:5]}"
            )

    # --- two-phase writes -------------------------------------------------------

    def test_properties_name_the_backend(self, target: ContractTarget) -> None:
        name = target.backend.properties.name
        assert isinstance(name, str)
        assert name

    def test_batch_objects_invisible_until_commit(self, target: ContractTarget) -> None:
        b = target.backend
        objects = {f"contract/invisible/{i}": payload(i, 1000 * i + 1) for i in range(3)}
        batch = b.batch()
        for key, data in objects.items():
            writer = batch.writer()
            writer.write(data)
            writer.commit(key)
        unfinished = batch.writer()
        unfinished.write(b"never committed")
        for key in objects:
            assert_absent(b, key)
        assert list(b.list()) == []
        assert list(b.list("contract/")) == []

        batch.commit()
        for key, data in objects.items():
            assert_holds(b, key, data)
        assert sorted(b.list()) == sorted(objects)

        unfinished.cancel()
        for key in objects:
            b.delete(key)
        assert target.staging() == []

    def test_writer_cancel_leaves_nothing(self, target: ContractTarget) -> None:
        b = target.backend
        batch = b.batch()
        writer = batch.writer()
        writer.write(payload(1, 300_000))
        writer.cancel()
        writer.cancel()  # idempotent
        assert target.staging() == []
        batch.commit()
        assert list(b.list()) == []
        assert target.staging() == []

    def test_batch_cancel_discards_staged_and_open_writers(self, target: ContractTarget) -> None:
        b = target.backend
        batch = b.batch()
        staged = batch.writer()
        staged.write(payload(2, 5000))
        staged.commit("contract/cancel/staged")
        still_open = batch.writer()
        still_open.write(payload(3, 5000))
        batch.cancel()
        batch.cancel()  # idempotent
        assert target.staging() == []
        batch.commit()  # nothing left to publish
        assert_absent(b, "contract/cancel/staged")
        assert list(b.list()) == []
        assert target.staging() == []

    def test_batch_cancel_after_commit_keeps_published(self, target: ContractTarget) -> None:
        b = target.backend
        batch = b.batch()
        writer = batch.writer()
        writer.write(b"published")
        writer.commit("contract/kept")
        batch.commit()
        batch.cancel()
        assert_holds(b, "contract/kept", b"published")
        b.delete("contract/kept")

    def test_finished_writer_refuses_further_use(self, target: ContractTarget) -> None:
        b = target.backend
        batch = b.batch()
        writer = batch.writer()
        writer.write(b"abc")
        writer.commit("contract/finished")
        with pytest.raises(StorageError):
            writer.write(b"more")
        with pytest.raises(StorageError):
            writer.commit("contract/finished-again")
        cancelled = batch.writer()
        cancelled.cancel()
        with pytest.raises(StorageError):
            cancelled.write(b"late")
        batch.commit()
        assert_holds(b, "contract/finished", b"abc")
        assert_absent(b, "contract/finished-again")
        b.delete("contract/finished")

    def test_writer_does_not_keep_the_callers_buffer(self, target: ContractTarget) -> None:
        # The data plane reuses its read buffers as soon as write() returns.
        b = target.backend
        buffer = bytearray(payload(4, 200_000))
        expected = bytes(buffer)
        batch = b.batch()
        writer = batch.writer()
        writer.write(memoryview(buffer))
        buffer[:] = payload(5, len(buffer))
        expected += bytes(buffer[:1000])
        writer.write(memoryview(buffer)[:1000])
        buffer[:] = bytes(len(buffer))
        writer.commit("contract/buffer")
        batch.commit()
        assert_holds(b, "contract/buffer", expected)
        b.delete("contract/buffer")

    def test_existing_key_keeps_the_original(self, target: ContractTarget) -> None:
        b = target.backend
        original, newcomer = payload(6, 4000), payload(7, 9000)
        put(b, "contract/first", original)
        batch = b.batch()
        writer = batch.writer()
        writer.write(newcomer)
        writer.commit("contract/first")
        batch.commit()
        assert_holds(b, "contract/first", original)
        assert target.staging() == []
        b.delete("contract/first")

    def test_same_key_twice_in_one_batch_gives_one_whole_object(
        self, target: ContractTarget
    ) -> None:
        b = target.backend
        copies = [payload(8, 3000), payload(9, 7000)]
        batch = b.batch()
        for data in copies:
            writer = batch.writer()
            writer.write(data)
            writer.commit("contract/twice")
        batch.commit()
        assert list(b.list()) == ["contract/twice"]
        assert get(b, "contract/twice") in copies
        assert b.stat("contract/twice") == len(get(b, "contract/twice"))
        assert target.staging() == []
        b.delete("contract/twice")

    def test_many_writers_in_one_batch(self, target: ContractTarget) -> None:
        # Large batches take the bulk-flush path of durable backends.
        b = target.backend
        contents = [payload(100 + i, 37 * i) for i in range(50)]
        batch = b.batch()
        writers = [batch.writer() for _ in contents]
        for part in range(3):  # interleave the writes of every object
            for writer, data in zip(writers, contents, strict=True):
                third = len(data) // 3
                end = len(data) if part == 2 else (part + 1) * third
                writer.write(data[part * third : end])
        keys = [content_key(data) for data in contents]
        for writer, key in zip(writers, keys, strict=True):
            writer.commit(key)
        assert list(b.list()) == []
        batch.commit()
        assert sorted(b.list()) == sorted(keys)
        for key, data in zip(keys, contents, strict=True):
            assert_holds(b, key, data)
        assert target.staging() == []
        for key in keys:
            b.delete(key)

    def test_small_batches(self, target: ContractTarget) -> None:
        # Small batches take the per-object flush path of durable backends.
        b = target.backend
        published: dict[str, bytes] = {}
        for n in range(12):
            batch = b.batch()
            fresh = {}
            for i in range(n % 3 + 1):
                data = payload(200 + 10 * n + i, [0, 1, 70_000, 300_000][(n + i) % 4])
                writer = batch.writer()
                writer.write(data)
                key = f"contract/small/{n}-{i}"
                writer.commit(key)
                fresh[key] = data
            for key in fresh:
                assert b.stat(key) is None
            batch.commit()
            published.update(fresh)
            for key, data in published.items():
                assert_holds(b, key, data)
        assert sorted(b.list("contract/small/")) == sorted(published)
        assert target.staging() == []
        for key in published:
            b.delete(key)

    # --- reads ------------------------------------------------------------------

    def test_read_ranges(self, target: ContractTarget) -> None:
        b = target.backend
        size = 2 * MiB + 12_345
        data = payload(10, size)
        put(b, "contract/ranges", data)
        cases: list[tuple[int, int | None]] = [
            (0, None),
            (0, 1),
            (0, 10),
            (0, size),
            (1, None),
            (MiB - 3, 7),  # across a chunk boundary
            (size // 2, MiB + 17),
            (size - 1, None),
            (size - 1, 1),
            (size - 5, 100),  # length past the end: the rest
            (size, None),  # offset == size: empty
            (size, 10),
            (123, 0),  # zero length: empty
            (0, 10 * size),
        ]
        for offset, length in cases:
            end = size if length is None else offset + length
            assert get(b, "contract/ranges", offset, length) == data[offset:end], (offset, length)
        b.delete("contract/ranges")

    def test_zero_byte_object(self, target: ContractTarget) -> None:
        b = target.backend
        put(b, "contract/empty", b"")
        assert b.stat("contract/empty") == 0
        assert list(b.list()) == ["contract/empty"]
        assert get(b, "contract/empty") == b""
        assert get(b, "contract/empty", 0, 10) == b""
        assert get(b, "contract/empty", 0, 0) == b""
        b.delete("contract/empty")
        assert_absent(b, "contract/empty")

    def test_streaming_read_of_a_large_object(self, target: ContractTarget) -> None:
        b = target.backend
        size = 64 * MiB
        block = bytearray(payload(11, MiB))
        expected = hashlib.sha256()
        batch = b.batch()
        writer = batch.writer()
        for i in range(size // MiB):
            block[:8] = i.to_bytes(8, "big")  # every block distinct: order matters
            expected.update(block)
            writer.write(memoryview(block))
        writer.commit("contract/large")
        batch.commit()
        del block
        assert b.stat("contract/large") == size

        with traced_peak() as peak:
            actual = hashlib.sha256()
            total = largest = chunks = 0
            for chunk in b.read("contract/large"):
                actual.update(chunk)
                total += len(chunk)
                largest = max(largest, len(chunk))
                chunks += 1
                del chunk
        assert total == size
        assert actual.hexdigest() == expected.hexdigest()
        assert chunks >= 8, f"{size} bytes came in {chunks} chunks: not a stream"
        assert largest <= 8 * MiB, f"a chunk of {largest} bytes is not bounded"
        assert peak.size < 16 * MiB, f"reading {size} bytes allocated {peak.size} bytes at once"
        b.delete("contract/large")

    def test_absent_key_reads_as_not_found(self, target: ContractTarget) -> None:
        b = target.backend
        assert_absent(b, "contract/never-written")
        with pytest.raises(BlobNotFound):
            get(b, "contract/never-written", 5, 10)

    def test_key_prefixes_and_extensions_are_not_objects(self, target: ContractTarget) -> None:
        b = target.backend
        put(b, "contract/nest/a/b/leaf", b"leaf")
        for key in ("contract/nest", "contract/nest/a", "contract/nest/a/b"):
            assert_absent(b, key)
            b.delete(key)  # deleting what is not an object succeeds and removes nothing
        put(b, "contract/flat", b"flat")
        assert_absent(b, "contract/flat/child")
        b.delete("contract/flat/child")
        assert_holds(b, "contract/nest/a/b/leaf", b"leaf")
        assert_holds(b, "contract/flat", b"flat")
        b.delete("contract/nest/a/b/leaf")
        b.delete("contract/flat")

    # --- delete, list, health -----------------------------------------------------

    def test_delete_is_idempotent(self, target: ContractTarget) -> None:
        b = target.backend
        b.delete("contract/del")  # absent: succeeds
        put(b, "contract/del", b"one")
        put(b, "contract/other", b"two")
        b.delete("contract/del")
        assert_absent(b, "contract/del")
        b.delete("contract/del")
        assert_holds(b, "contract/other", b"two")
        put(b, "contract/del", b"again")  # a deleted key can be written anew
        assert_holds(b, "contract/del", b"again")
        b.delete("contract/del")
        b.delete("contract/other")

    def test_list_with_prefix(self, target: ContractTarget) -> None:
        b = target.backend
        keys = ["contract/a/1", "contract/a/2", "contract/ab/3", "contract/b/4", "contract/a0"]
        for i, key in enumerate(keys):
            put(b, key, payload(20 + i, 10))
        pending = b.batch()
        writer = pending.writer()
        writer.write(b"staged only")
        writer.commit("contract/a/staged")

        assert sorted(b.list()) == sorted(keys)
        assert sorted(b.list("")) == sorted(keys)
        assert sorted(b.list("contract/a/")) == ["contract/a/1", "contract/a/2"]
        assert sorted(b.list("contract/a")) == [
            "contract/a/1",
            "contract/a/2",
            "contract/a0",
            "contract/ab/3",
        ]
        assert sorted(b.list("contract/a/1")) == ["contract/a/1"]
        assert list(b.list("contract/zzz")) == []
        assert list(b.list("nothing-here/")) == []

        pending.cancel()
        for key in keys:
            b.delete(key)

    def test_health(self, target: ContractTarget) -> None:
        target.backend.health()
        target.backend.health()
        assert target.staging() == []

    # --- concurrency --------------------------------------------------------------

    def test_concurrent_commits_of_one_key_leave_one_whole_object(
        self, target: ContractTarget
    ) -> None:
        b = target.backend
        errors: list[BaseException] = []

        def commit(key: str, data: bytes, barrier: threading.Barrier) -> None:
            try:
                batch = b.batch()
                writer = batch.writer()
                writer.write(data)
                writer.commit(key)
                barrier.wait(timeout=30)
                batch.commit()
            except BaseException as exc:
                errors.append(exc)

        for round_ in range(10):
            key = f"contract/race/{round_}"
            copies = [payload(300 + 2 * round_ + t, 150_000 + 1000 * t) for t in range(2)]
            barrier = threading.Barrier(len(copies))
            threads = [
                threading.Thread(target=commit, args=(key, data, barrier)) for data in copies
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert errors == []
            stored = get(b, key)
            assert stored in copies, f"round {round_}: the stored object is neither copy"
            assert b.stat(key) == len(stored)
            assert list(b.list(key)) == [key]
        assert target.staging() == []
        for round_ in range(10):
            b.delete(f"contract/race/{round_}")

    def test_concurrent_batches_sharing_directories(self, target: ContractTarget) -> None:
        b = target.backend
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def run(t: int) -> None:
            try:
                barrier.wait(timeout=30)
                for n in range(3):
                    batch = b.batch()
                    for i in range(4):
                        writer = batch.writer()
                        writer.write(payload(1000 * t + 10 * n + i, 2000))
                        writer.commit(f"contract/shared/{n}/{i}/{t}")
                    batch.commit()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        keys = [
            f"contract/shared/{n}/{i}/{t}" for t in range(4) for n in range(3) for i in range(4)
        ]
        assert sorted(b.list("contract/shared/")) == sorted(keys)
        for t in range(4):
            for n in range(3):
                for i in range(4):
                    data = payload(1000 * t + 10 * n + i, 2000)
                    assert_holds(b, f"contract/shared/{n}/{i}/{t}", data)
        assert target.staging() == []
        for key in keys:
            b.delete(key)
