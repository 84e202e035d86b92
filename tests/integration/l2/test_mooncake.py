"""mooncake_store specifics against a real mooncake_master + storage node on loopback.

The L1 arena registered once (copy-free path), removal of a leased object deferred until its lease
lapses, and a start-up failure that names the flag.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest

from lmcache.adapters.storage._native_mem import address_of
from lmcache.app.config import ConfigError
from tests.integration.l2.conftest import build
from tests.integration.l2.servers import free_port
from tests.integration.l2.test_contract import key, payload

if TYPE_CHECKING:
    from tests.integration.l2.servers import MooncakeCluster


async def test_l1_arena_registered_once_moves_extents(mooncake: MooncakeCluster) -> None:
    adapter = build(mooncake.spec("reg:"))
    arena = np.zeros(4 << 20, np.uint8)
    adapter.register_l1(address_of(arena), arena.nbytes)
    view = memoryview(arena)
    src, dst = view[: 1 << 20], view[2 << 20 : 3 << 20]
    src[:] = payload(5, 1 << 20)
    assert adapter._memory.covered(address_of(src), src.nbytes)
    assert await adapter.store([key(5)], [src]) == [True]
    assert await adapter.load([key(5)], [dst]) == [True]
    assert bytes(dst) == bytes(src)
    assert not adapter._memory._temporary  # nothing registered per call
    await adapter.close()


async def test_delete_of_a_leased_object_hides_it_and_removes_it_later(mooncake: MooncakeCluster) -> None:
    adapter = build(mooncake.spec(f"lease-{time.time_ns()}:"))
    data = payload(1, 5000)
    await adapter.store([key(1)], [data])
    assert await adapter.load([key(1)], [memoryview(bytearray(5000))]) == [True]  # takes a lease
    assert await adapter.delete([key(1)]) == [True]
    assert await adapter.lookup_and_lock([key(1)]) == [False]
    assert key(1) not in (await adapter.list_keys()).keys
    assert set(adapter._doomed) == {key(1)}
    # A new store of the key cancels the pending removal.
    assert await adapter.store([key(1)], [data]) == [True]
    assert not adapter._doomed
    assert await adapter.lookup_and_lock([key(1)]) == [True]
    await adapter.close()


def test_unreachable_master_fails_start_up_naming_the_flag() -> None:
    spec = {"type": "mooncake_store", "master_server_address": f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"--l2-adapter #1 \(type 'mooncake_store'\): .*setup failed"):
        build(spec)
    assert time.monotonic() - started < 60


async def test_an_object_that_stays_leased_is_removed_by_force_in_the_end(
    mooncake: MooncakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmcache.adapters.storage import mooncake as module

    monkeypatch.setattr(module, "FORCE_REMOVE_AFTER_S", 0.2)
    monkeypatch.setattr(module, "_RETRY_REMOVE_S", 0.05)
    adapter, reader = build(mooncake.spec("force:")), build(mooncake.spec("force:"))
    await adapter.store([key(2)], [payload(2, 4000)])
    assert await reader.load([key(2)], [memoryview(bytearray(4000))]) == [True]  # another server's lease
    assert await adapter.delete([key(2)]) == [True]
    for _ in range(60):
        await asyncio.sleep(0.05)
        if not adapter._doomed:
            break
    assert not adapter._doomed and await reader.lookup_and_lock([key(2)]) == [False]
    await adapter.close()
    await reader.close()


async def test_transfers_stay_on_loopback(mooncake: MooncakeCluster) -> None:
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    adapter = build(mooncake.spec("lo:"))
    data = payload(3, 1 << 20)
    assert await adapter.store([key(3)], [data]) == [True]
    assert await adapter.load([key(3)], [memoryview(bytearray(data.nbytes))]) == [True]
    pids = {str(os.getpid()), *(str(p.pid) for p in mooncake.procs)}
    lines = subprocess.run([ss, "-tnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in lines if any(f"pid={pid}," in line for pid in pids)]
    assert ours, "no connection of ours was listed"
    peers = {line.split()[4].rsplit(":", 1)[0] for line in ours}
    assert peers <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, peers
    await adapter.close()


def test_a_missing_system_library_fails_start_up_saying_which(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.abc
    import sys

    class NoVerbs(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "mooncake.store":
                raise ImportError(
                    "libibverbs.so.1: cannot open shared object file: No such file or directory"
                )

    for name in ("mooncake.store", "lmcache.adapters.storage.mooncake"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoVerbs(), *sys.meta_path])
    with pytest.raises(ConfigError, match=r"cannot load \(libibverbs\.so\.1: .*apt-get install libibverbs1"):
        build({"type": "mooncake_store", "master_server_address": "127.0.0.1:1"})
