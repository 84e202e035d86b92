"""plugin: a user's class is checked at load and contained at run time (raises and bad answers are misses)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.plugin import PluginL2Adapter
from lmcache.domain.keys import ObjectKey
from lmcache.ports.l2_adapter import KeyPage, L2Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.ports.l2_adapter import L2Adapter

K = ObjectKey(b"\x01" * 8, "m", 1)


class Broken:
    """Conforms by shape, fails at run time."""

    def __init__(self, mode: str = "raise") -> None:
        self.mode = mode
        self.closed = False

    async def _answer(self, keys: Sequence[ObjectKey]) -> list[bool]:
        if self.mode == "raise":
            raise ConnectionError("backend gone")
        return [True] * (len(keys) + 1)  # one answer too many

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        return await self._answer(keys)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        return await self._answer(keys)

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        return await self._answer(keys)

    async def unlock(self, keys: Sequence[ObjectKey]) -> None:
        raise ConnectionError("backend gone")

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        return await self._answer(keys)

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> Any:
        return ["not", "a", "page"]

    async def usage(self) -> Any:
        raise ConnectionError("backend gone")

    async def close(self) -> None:
        self.closed = True


class NotAsync:
    def store(self) -> None: ...


@pytest.mark.parametrize("mode", ["raise", "too_many"])
async def test_failures_in_user_code_are_misses_and_counted(mode: str) -> None:
    adapter = PluginL2Adapter(__name__, "Broken", {"mode": mode})
    _check: L2Adapter = adapter
    assert await adapter.store([K], [memoryview(b"x")]) == [False]
    assert await adapter.lookup_and_lock([K]) == [False]
    assert await adapter.load([K], [memoryview(bytearray(1))]) == [False]
    assert await adapter.delete([K]) == [False]
    await adapter.unlock([K])
    assert await adapter.list_keys() == KeyPage(())
    assert await adapter.usage() == L2Usage(0, 0)
    assert adapter.counters.backend_errors == 7
    await adapter.close()
    assert adapter.inner.closed


def test_non_conforming_class_is_refused() -> None:
    with pytest.raises(L2ConfigError, match=r"missing or not async: store, lookup_and_lock, load"):
        PluginL2Adapter(__name__, "NotAsync")
