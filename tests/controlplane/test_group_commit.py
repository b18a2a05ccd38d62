"""GroupCommit: concurrent submissions written in shared batches, errors kept per item."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

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


class FirstBatchHeld:
    """A writer whose first batch waits until it is released; later ones go to ``then``."""

    def __init__(self, then: Callable[[Sequence[int]], list[BaseException | None]]) -> None:
        self.batches: list[list[int]] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        self._then = then

    def __call__(self, items: Sequence[int]) -> list[BaseException | None]:
        self.batches.append(list(items))
        if not self.inside.is_set():
            self.inside.set()
            assert self.release.wait(10)  # the others queue meanwhile
            return [None] * len(items)
        return self._then(items)


def submit_while_held(
    group: GroupCommit[int], writer: FirstBatchHeld, first: int, others: Sequence[int]
) -> dict[int, BaseException | None]:
    """Submit ``first``; while its batch is held, queue ``others``; then release.
    Returns what each submission raised (None: committed)."""
    errors: dict[int, BaseException | None] = {}

    def run(i: int) -> None:
        try:
            group.submit(i)
        except BaseException as exc:
            errors[i] = exc
        else:
            errors[i] = None

    held = threading.Thread(target=run, args=(first,))
    held.start()
    assert writer.inside.wait(10)
    queued = [threading.Thread(target=run, args=(i,)) for i in others]
    for t in queued:
        t.start()
    while len(group._pending) < len(others):  # every other submission is queued
        threading.Event().wait(0.001)
    writer.release.set()
    for t in [held, *queued]:
        t.join(10)
    return errors


def test_submissions_that_wait_share_a_batch_and_all_are_written_once() -> None:
    writer = FirstBatchHeld(lambda items: [None] * len(items))
    submit_while_held(GroupCommit(writer), writer, 0, range(1, 9))
    batches = writer.batches
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
    def fail(items: Sequence[int]) -> list[BaseException | None]:
        raise OSError("disk full")

    writer = FirstBatchHeld(fail)
    group = GroupCommit(writer)
    errors = submit_while_held(group, writer, 0, (1, 2, 3))
    calls = writer.batches
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
