"""DualHasher computes exactly what hashlib and blake3 compute, in every mode."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifactstore.dataplane.digests import DualHasher
from artifactstore.model.identity import BlobDigests, Digest
from tests.dataplane.conftest import data_of, reference

KiB = 1024
INLINE_BELOW = 256 * KiB  # digests._INLINE_BELOW: the inline/pool switch

# Sizes that matter: tiny, around the inline/pool switch, and a few MiB.
sizes = st.one_of(
    st.integers(0, 4 * KiB),
    st.integers(INLINE_BELOW - 2, INLINE_BELOW + 2),
    st.integers(0, 3 * 1024 * KiB),
)
# Chunk sizes for a stream of updates: small and large mixed.
chunk_sizes = st.lists(
    st.one_of(st.integers(0, 2 * KiB), st.integers(INLINE_BELOW - 1, INLINE_BELOW + 1)),
    max_size=8,
).map(lambda xs: [*xs, 700 * KiB] if len(xs) % 3 == 0 else xs)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-hash")
    yield executor
    executor.shutdown(wait=True)


@settings(max_examples=40, deadline=None)
@given(size=sizes, seed=st.integers(0, 2**32))
def test_inline_single_update_matches_the_references(size: int, seed: int) -> None:
    data = data_of(seed, size)
    hasher = DualHasher()
    hasher.update(data)
    assert hasher.size == size
    assert hasher.result() == reference(data)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=sizes, seed=st.integers(0, 2**32))
def test_pooled_single_update_matches_the_references(
    pool: ThreadPoolExecutor, size: int, seed: int
) -> None:
    data = data_of(seed, size)
    hasher = DualHasher(pool)
    hasher.update(data)
    assert hasher.result() == reference(data)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=chunk_sizes, seed=st.integers(0, 2**32), pooled=st.booleans())
def test_mixed_small_and_large_updates_match_the_references(
    pool: ThreadPoolExecutor, chunks: list[int], seed: int, pooled: bool
) -> None:
    rng = random.Random(seed)
    parts = [rng.randbytes(n) for n in chunks]
    hasher = DualHasher(pool if pooled else None)
    for i, part in enumerate(parts):  # every buffer type the data plane passes
        kinds = (part, bytearray(part), memoryview(part))
        hasher.update(kinds[i % 3])
    data = b"".join(parts)
    assert hasher.size == len(data)
    assert hasher.result() == reference(data)


def test_pooled_hashing_with_reused_double_buffers(pool: ThreadPoolExecutor) -> None:
    # The ingest loop's pattern: a buffer is refilled only after the next update returns.
    rng = random.Random(7)
    buffers = (bytearray(INLINE_BELOW * 2), bytearray(INLINE_BELOW * 2))
    hasher = DualHasher(pool)
    whole = bytearray()
    for i in range(9):
        buffer = buffers[i % 2]
        n = rng.choice([len(buffer), INLINE_BELOW, 1000])
        buffer[:n] = rng.randbytes(n)
        whole += buffer[:n]
        hasher.update(memoryview(buffer)[:n])
    assert hasher.result() == reference(bytes(whole))


def test_hashers_sharing_one_pool_stay_apart(pool: ThreadPoolExecutor) -> None:
    first, second = data_of(1, 2_000_000), data_of(2, 2_000_000)
    a, b = DualHasher(pool), DualHasher(pool)
    step = 500_000
    for start in range(0, len(first), step):
        a.update(first[start : start + step])
        b.update(second[start : start + step])
    assert a.result() == reference(first)
    assert b.result() == reference(second)


def test_result_can_be_taken_twice(pool: ThreadPoolExecutor) -> None:
    hasher = DualHasher(pool)
    hasher.update(data_of(3, INLINE_BELOW * 2))
    assert hasher.result() == hasher.result()


def test_digests_of_bytes_known_vectors() -> None:
    empty = BlobDigests.of(b"")
    assert empty.blake3 == Digest(
        "blake3", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
    assert empty.sha256 == Digest(
        "sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert empty.size == 0
    abc = BlobDigests.of(b"abc")
    assert abc.blake3 == Digest(
        "blake3", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )
    assert abc.sha256 == Digest(
        "sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert abc.size == 3
