"""FakeL2Adapter: a dict-backed L2 tier with injectable faults, delays and hangs."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from lmcache.ports.l2_adapter import KeyPage, L2Adapter, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey


class FakeL2Adapter:
    """Stores bytes in a dict; records what happened.

    Faults: `fail_next_stores(n)` fails the next n stored keys; `lose(key)` drops an object as if the
    backend lost it; `raise_on` names ops that raise; `hang_on` names ops that never return (for
    deadlines); `delay_s` adds an asyncio delay to every op.
    """

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.objects: dict[ObjectKey, bytes] = {}
        self.locks: Counter[ObjectKey] = Counter()
        self.loaded: list[ObjectKey] = []
        self.store_batches: list[tuple[ObjectKey, ...]] = []
        self.raise_on: set[str] = set()
        self.hang_on: set[str] = set()
        self.delay_s = 0.0
        self.closed = False
        self._fail_stores = 0
        self._never = asyncio.Event()

    def fail_next_stores(self, n: int) -> None:
        self._fail_stores += n

    def lose(self, key: ObjectKey) -> None:
        self.objects.pop(key, None)

    async def _enter(self, op: str) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if op in self.hang_on:
            await self._never.wait()
        if op in self.raise_on:
            raise ConnectionError(f"injected {op} failure in {self.name}")

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        await self._enter("store")
        self.store_batches.append(tuple(keys))
        out = []
        for key, buf in zip(keys, buffers, strict=True):
            if self._fail_stores:
                self._fail_stores -= 1
                out.append(False)
                continue
            self.objects[key] = bytes(buf)
            out.append(True)
        return out

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        await self._enter("lookup")
        out = [key in self.objects for key in keys]
        self.locks.update(k for k, ok in zip(keys, out, strict=True) if ok)
        return out

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        await self._enter("load")
        out = []
        for key, buf in zip(keys, buffers, strict=True):
            data = self.objects.get(key)
            if data is None or len(data) != len(buf):
                out.append(False)
                continue
            buf[:] = data
            self.loaded.append(key)
            out.append(True)
        return out

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        await self._enter("load")
        out: list[int | None] = []
        for key, buf in zip(keys, buffers, strict=True):
            data = self.objects.get(key)
            if data is None or len(data) > len(buf):
                out.append(None)
                continue
            buf[: len(data)] = data
            self.loaded.append(key)
            out.append(len(data))
        return out

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        await self._enter("unlock")
        for key in keys:
            if self.locks[key] > 0:
                self.locks[key] -= 1
        self.locks += Counter()  # drop zero counts

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        await self._enter("delete")
        return [self.objects.pop(key, None) is not None for key in keys]

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        await self._enter("list")
        ordered = sorted(self.objects, key=lambda k: (k.model_name, k.cache_salt, k.kv_rank, k.chunk_hash))
        start = int(cursor) if cursor else 0
        page = tuple(ordered[start : start + limit])
        nxt = str(start + limit) if start + limit < len(ordered) else None
        return KeyPage(page, nxt)

    async def usage(self) -> L2Usage:
        await self._enter("usage")
        by_salt: Counter[str] = Counter()
        for key, data in self.objects.items():
            by_salt[key.cache_salt] += len(data)
        return L2Usage(sum(by_salt.values()), len(self.objects), 0, dict(by_salt))

    async def close(self) -> None:
        self.closed = True


_check: L2Adapter = FakeL2Adapter()
