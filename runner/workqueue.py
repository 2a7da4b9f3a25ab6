"""The hand-over from the dispatcher to the workers: claimed jobs waiting for a free worker.

A deque that is only awaited when it is empty. anyio's memory streams checkpoint on every
receive and build a waiter object per call; at thousands of jobs a second that bookkeeping
cost more CPU than the queue itself, and a worker taking a job that is already there needs
neither.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """Items put by one producer, taken by many consumers, closed when no more will come."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._closed = False
        self._waiting = 0
        self._ready = anyio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[T]) -> None:
        """Queue items; wake the consumers waiting for them."""
        if self._closed:
            raise RuntimeError("put on a closed WorkQueue")
        self._items.extend(items)
        if self._waiting and self._items:
            self._notify()

    def close(self) -> None:
        """No more items will come: consumers drain what is left, then get None."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        self._ready.set()
        self._ready = anyio.Event()

    async def get(self) -> T | None:
        """The next item, waiting only if there is none; None once closed and drained.

        Cancelling a wait loses nothing: an item leaves the queue only when it is returned.
        """
        while not self._items:
            if self._closed:
                return None
            ready = self._ready
            self._waiting += 1
            try:
                await ready.wait()
            finally:
                self._waiting -= 1
        return self._items.popleft()
