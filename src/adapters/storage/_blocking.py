"""Blocking work (file I/O, hashing, copies) run off the event loop without losing a caller's buffers.

Each helper waits for running threads on cancellation before re-raising: a job may still be writing
into a buffer the caller owns, which it must not reuse until that stops.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import threading
    from collections.abc import Awaitable, Callable
    from concurrent.futures import Executor


__all__ = ("offload", "run_jobs", "run_on")

_OFFLOAD_BYTES = 1 << 20  # hashing and copying less than this stays on the event loop


T = TypeVar("T")


async def offload(nbytes: int, fn: Callable[..., T], *args: object) -> T:
    """Run CPU-heavy `fn` (hashing, copying: both release the GIL) off the event loop when `nbytes` is large.

    On cancellation it waits for the thread before re-raising: `fn` may be writing into a caller's buffer,
    which the caller must not reuse until that stops.
    """
    if nbytes < _OFFLOAD_BYTES:
        return fn(*args)
    return await run_on(None, fn, *args)


async def run_on(pool: Executor | None, fn: Callable[..., T], *args: object) -> T:
    """Run blocking `fn` on `pool` (None: the loop's default executor) and return its result.

    On cancellation it waits for the thread before re-raising: a client call may still be writing into
    a caller's buffer, which the caller must not reuse until that stops.
    """
    future = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.gather(future, return_exceptions=True)
        raise


async def run_jobs(
    pool: Executor,
    jobs: list[Callable[[], Any]],
    cancelled: threading.Event,
    settle: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """Run blocking jobs on `pool` (results or exceptions, in order).

    On cancellation it sets `cancelled` (jobs not started yet skip their work) and waits for the running
    ones, which may still touch the caller's buffers, before re-raising. `settle` sees the results in both
    cases, so work finished before a cancellation (a file renamed into place) is still accounted for.
    """
    loop = asyncio.get_running_loop()
    gathered: Awaitable[list[Any]] = asyncio.gather(
        *(loop.run_in_executor(pool, job) for job in jobs), return_exceptions=True
    )
    try:
        results = await asyncio.shield(gathered)
    except asyncio.CancelledError:
        cancelled.set()
        results = await gathered
        if settle is not None:
            settle(results)
        raise
    if settle is not None:
        settle(results)
    return results
