"""Serde as an L2 wrapper: a chain of stages (fp8, aesgcm, zstd) around one adapter's store and load.

Store: every object is encoded by the chain in order (stage 1's output is stage 2's input), put in the
envelope (serde_base.py), and handed to the adapter, which then writes its own header with the checksum
over these stored bytes. Load: the adapter's `load_sized` reads and verifies the stored bytes into a
bounce buffer as large as the chain can produce (their size varies), then the chain decodes in reverse,
the first stage writing straight into the caller's buffer. Every intermediate size is checked against
the bound the chain computes from the caller's buffer, so a crafted object cannot make a stage allocate
more than that.

An object the chain cannot encode (fp8: unknown dtype) is a failed store for this adapter; one it cannot
decode (written by another chain or without serde, a failed authentication, inconsistent data) is a
miss. Both are counted in `serde_counters` (`encode_failures`, `mismatches`, `auth_failures`,
`decode_failures`), logged (the first few of each kind, then every 1000th), and never reach the engine.
Stored objects stay as they are: a wrong key is a configuration mistake, not damage.

Threads and memory: stages run on this wrapper's own pool of `max_workers` threads (default
min(4, CPUs)), never on the event loop; a call handles `2 x max_workers` objects at a time (a batch's next
slice encodes while the current one is stored), so a large batch holds a bounded number of encoded copies.
Encoded objects, bounce buffers and stage scratch come from a bounded pool of reused buffers
(_buffers.py: fresh multi-MiB allocations page-fault). A cancelled call waits for the stages still
touching its buffers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_mixins import Forwarding
from lmcache.adapters.storage._adapter_state import AdapterCounters
from lmcache.adapters.storage._blocking import run_jobs
from lmcache.adapters.storage._buffers import BufferPool, Scratch
from lmcache.adapters.storage.serde_base import (
    ENVELOPE,
    SerdeError,
    SerdeMismatchError,
    envelope,
    parse_envelope,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.adapters.storage.serde_base import SerdeStage
    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import SizedLoadL2Adapter

__all__ = ("SerdeL2Adapter", "can_load_sized")

logger = logging.getLogger(__name__)
_COUNTER_OF = {"mismatch": "mismatches", "auth": "auth_failures", "decode": "decode_failures"}


def _unless(cancelled: threading.Event, job: Any) -> Any:
    return None if cancelled.is_set() else job()


def can_load_sized(adapter: object) -> bool:
    """Whether every layer of an adapter (down its `inner` chain) implements `load_sized`."""
    seen: set[int] = set()
    layer: object | None = adapter
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if not callable(getattr(type(layer), "load_sized", None)):  # the type: wrappers forward attributes
            return False
        layer = getattr(layer, "inner", None)
    return True


class SerdeL2Adapter(Forwarding):
    """Serde wrapper around `inner`; see the module docstring.

    Args:
        inner: An adapter with `load_sized` (checked by the factory with `can_load_sized`).
        stages: The chain, in store order.
        max_workers: Pool threads (None: min(4, CPU count)).
        name: How logs name the adapter.
    """

    inner: SizedLoadL2Adapter

    def __init__(
        self,
        inner: SizedLoadL2Adapter,
        stages: Sequence[SerdeStage],
        max_workers: int | None = None,
        name: str = "L2",
    ) -> None:
        if not stages:
            raise ValueError("a serde chain needs at least one stage")
        self.inner = inner
        self.stages = list(stages)
        self.name = name
        self.workers = max_workers or min(4, os.cpu_count() or 1)
        self.window = 2 * self.workers
        self.serde_counters: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lmcache-serde")
        self._buffers = BufferPool(keep=4 * self.window)

    @property
    def counters(self) -> AdapterCounters:
        """The inner adapter's counters (a fresh set when it keeps none)."""
        counters = getattr(self.inner, "counters", None)
        return counters if isinstance(counters, AdapterCounters) else AdapterCounters()

    def serde_stats(self) -> dict[str, Any]:
        """Stages, pool size and failure counts (for `/status`)."""
        return {
            "stages": [stage.name for stage in self.stages],
            "workers": self.workers,
            **self.serde_counters,
        }

    def bounds(self, plain_size: int) -> list[int]:
        """Upper bounds of each stage's input, then of the chain's output, for a `plain_size` object."""
        out = [plain_size]
        for stage in self.stages:
            out.append(stage.max_encoded_size(out[-1]))
        return out

    # -- the work done on the pool -------------------------------------------------------------------------
    def _encode(self, key: ObjectKey, plain: memoryview, scratch: Scratch) -> bytearray | memoryview:
        data: bytearray | memoryview = plain
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            data = stage.encode(key, memoryview(data), ENVELOPE.size if i == last else 0, scratch)
        out = data
        pad = 1 if len(out) == plain.nbytes else 0
        if pad:
            out = bytearray(out)
            out.append(0)
        envelope(out, plain.nbytes, len(self.stages), pad)
        return out

    def _decode(self, key: ObjectKey, raw: memoryview, dest: memoryview, scratch: Scratch) -> bool:
        try:
            data = parse_envelope(raw, dest.nbytes, len(self.stages))
            bounds = self.bounds(dest.nbytes)
            for i in range(len(self.stages) - 1, 0, -1):
                stage = self.stages[i]
                size = stage.decoded_size(key, data)
                if size > bounds[i]:
                    raise SerdeError(f"{stage.name} stage says {size} bytes, at most {bounds[i]} fit")
                step = scratch(size)
                stage.decode_into(key, data, step, scratch)
                data = step
            if self.stages[0].decoded_size(key, data) != dest.nbytes:
                raise SerdeMismatchError("object holds another size than the buffer")
            self.stages[0].decode_into(key, data, dest, scratch)
            return True
        finally:
            scratch.release()

    async def _run(self, jobs: list[Any]) -> list[Any]:
        cancelled = threading.Event()  # set by run_jobs when the caller is cancelled: jobs not begun skip
        return await run_jobs(
            self._pool, [functools.partial(_unless, cancelled, job) for job in jobs], cancelled
        )

    def _failed(self, kind: str, key: ObjectKey, exc: BaseException) -> None:
        counter = _COUNTER_OF.get(getattr(exc, "kind", ""), "decode_failures") if kind == "load" else kind
        self.serde_counters[counter] += 1
        seen = self.serde_counters[counter]
        if seen <= 10 or seen % 1000 == 0:
            logger.warning(
                "L2 adapter %s: serde %s of %s failed (%d so far): %s",
                self.name,
                kind,
                key.short(),
                seen,
                exc,
            )

    # -- port ---------------------------------------------------------------------------------------------
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Encode on the pool, then store the encoded objects; a failed encode is a failed store.

        A batch goes in slices of `window` objects, the next slice encoding while this one is stored.
        """
        out = [False] * len(keys)
        slices = [range(s, min(len(keys), s + self.window)) for s in range(0, len(keys), self.window)]
        if not slices:
            return out
        pending = asyncio.ensure_future(self._encode_slice(keys, buffers, slices[0]))
        try:
            for number in range(len(slices)):
                ready, scratches = await pending
                if number + 1 < len(slices):
                    pending = asyncio.ensure_future(self._encode_slice(keys, buffers, slices[number + 1]))
                try:
                    if ready:
                        results = await self.inner.store([keys[i] for i, _ in ready], [b for _, b in ready])
                        for (i, _), ok in zip(ready, results, strict=True):
                            out[i] = bool(ok)
                finally:
                    for scratch in scratches:
                        scratch.release()
        finally:
            if not pending.done():  # cancelled: the next slice's encodes still read the caller's buffers
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
        return out

    async def _encode_slice(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], idx: range
    ) -> tuple[list[tuple[int, memoryview]], list[Scratch]]:
        scratches = [Scratch(self._buffers) for _ in idx]
        jobs = [
            functools.partial(self._encode, keys[i], buffers[i], s)
            for i, s in zip(idx, scratches, strict=True)
        ]
        ready = []
        for i, blob in zip(idx, await self._run(jobs), strict=True):
            if isinstance(blob, BaseException):
                self._failed("encode_failures", keys[i], blob)
            else:
                ready.append((i, memoryview(blob)))
        return ready, scratches

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Load the stored bytes into bounce buffers, decode into `buffers` on the pool."""
        out = [False] * len(keys)
        for start in range(0, len(keys), self.window):
            idx = list(range(start, min(len(keys), start + self.window)))
            scratches = [Scratch(self._buffers) for _ in idx]
            try:
                bounce = [
                    s(ENVELOPE.size + self.bounds(buffers[i].nbytes)[-1] + 1)
                    for i, s in zip(idx, scratches, strict=True)
                ]
                sizes = await self.inner.load_sized([keys[i] for i in idx], bounce)
                found = [
                    (i, b[:size], s)
                    for i, b, s, size in zip(idx, bounce, scratches, sizes, strict=True)
                    if size is not None
                ]
                jobs = [functools.partial(self._decode, keys[i], raw, buffers[i], s) for i, raw, s in found]
                for (i, _, _), result in zip(found, await self._run(jobs), strict=True):
                    if isinstance(result, BaseException):
                        self._failed("load", keys[i], result)
                    else:
                        out[i] = result is True
            finally:
                for scratch in scratches:
                    scratch.release()
        return out

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Forwarded unchanged."""
        return await self.inner.lookup_and_lock(keys)

    def is_locked(self, key: ObjectKey) -> bool:
        """Whether a reader pinned `key` (asked of the adapter)."""
        probe = getattr(self.inner, "is_locked", None)
        return callable(probe) and bool(probe(key))

    async def close(self) -> None:
        """Close the adapter, then stop the pool."""
        try:
            await self.inner.close()
        finally:
            await asyncio.to_thread(self._pool.shutdown, True)
