"""GroupCommit: concurrent submissions written in shared batches, errors kept per item."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from artifactstore.controlplane.db.group import GroupCommit


class Refused(Exception):
    pass


def test_a_lone_submission_is_written_at_once() -> None:
    batches: list[list[int]] = []

    def write(items: Sequence[int]) -> list[BaseException | None]:
        batches.append(list(items))
        return [None] * len(items)

    group = GroupCommit(write)
    group.submit(1)
    group.submit(2)
    assert batches == [[1], [2]]


def test_submissions_that_wait_share_a_batch_and_all_are_written_once() -> None:
    batches: list[list[int]] = []
    first_inside = threading.Event()
    release = threading.Event()

    def write(items: Sequence[int]) -> list[BaseException | None]:
        batches.append(list(items))
        if not first_inside.is_set():
            first_inside.set()
            assert release.wait(10)  # the others queue meanwhile
        return [None] * len(items)

    group = GroupCommit(write)
    first = threading.Thread(target=group.submit, args=(0,))
    first.start()
    assert first_inside.wait(10)
    others = [threading.Thread(target=group.submit, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    while len(group._pending) < 8:  # every other submission is queued
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 9))  # one batch for all that waited
    assert len(batches) == 2


def test_an_item_refused_alone_fails_alone() -> None:
    def write(items: Sequence[int]) -> list[BaseException | None]:
        return [Refused(f"item {i}") if i % 2 else None for i in items]

    group = GroupCommit(write)
    group.submit(2)
    with pytest.raises(Refused, match="item 3"):
        group.submit(3)


def test_a_failed_transaction_fails_every_item_of_its_batch() -> None:
    calls: list[list[int]] = []
    inside = threading.Event()
    release = threading.Event()

    def write(items: Sequence[int]) -> list[BaseException | None]:
        calls.append(list(items))
        if not inside.is_set():
            inside.set()
            assert release.wait(10)
            return [None]
        raise OSError("disk full")

    group = GroupCommit(write)
    errors: dict[int, BaseException | None] = {}

    def run(i: int) -> None:
        try:
            group.submit(i)
        except BaseException as exc:
            errors[i] = exc
        else:
            errors[i] = None

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert inside.wait(10)
    others = [threading.Thread(target=run, args=(i,)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    while len(group._pending) < 3:
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert errors[0] is None
    assert all(isinstance(errors[i], OSError) for i in (1, 2, 3))
    assert len(calls) == 2 and sorted(calls[1]) == [1, 2, 3]
    with pytest.raises(OSError):  # still usable (and still failing) after a failed batch
        group.submit(4)
    assert calls[-1] == [4]


def test_a_writer_that_answers_for_the_wrong_number_of_items_fails_them() -> None:
    group: GroupCommit[int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        group.submit(1)
