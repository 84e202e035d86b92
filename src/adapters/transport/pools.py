"""Worker pools of the ZMQ server (wire-protocol.md §1.9).

The affinity pool keeps one client's transfers in order: a client's ROUTER identity always maps to the
same single-thread executor. The CPU pool is a plain thread pool. Both are bounded by an in-flight
counter in the server, not here.
"""

from __future__ import annotations

import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("AffinityPool",)


class AffinityPool:
    """`size` single-thread executors; `submit(identity, fn)` always picks the same one for an identity."""

    def __init__(self, size: int, name: str = "lmcache-aff") -> None:
        if size < 1:
            raise ValueError("an affinity pool needs at least one thread")
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"{name}-{i}") for i in range(size)]

    def submit(self, identity: bytes, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` on the identity's thread, after the identity's earlier work."""
        index = zlib.crc32(identity) % len(self._executors)
        return self._executors[index].submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Finish queued work (when `wait`) and stop the threads."""
        for executor in self._executors:
            executor.shutdown(wait=wait)
