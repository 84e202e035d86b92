"""Start-up removal of SHM pools left by dead servers: automatic pool names, dead pids, no lock holder."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from lmcache.adapters.memory.shm_reaper import hold_pool_lock, remove_dead_pools

if TYPE_CHECKING:
    from pathlib import Path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_unlocked_automatic_pools_of_dead_pids_are_removed(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "gone": f"lmcache_l1_pool_{dead}_0123abcd",
        "alive": f"lmcache_l1_pool_{alive}_0123abcd",
        "mine": f"lmcache_l1_pool_{os.getpid()}_0123abcd",
        "named": "lmcache_l1_pool_my-pool",  # --shm-name: replaced by its own next start instead
        "engine": f"lmcache_kv_{dead}_0",  # an engine's segment: never ours to remove
        "locked": f"lmcache_l1_pool_{dead}_deadbeef",  # a live server in another pid namespace
        "odd": f"lmcache_l1_pool_{dead}_xyz",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"\0" * 16)
    holder = hold_pool_lock(names["locked"], str(tmp_path))
    assert holder is not None
    try:
        assert remove_dead_pools(str(tmp_path)) == [names["gone"]]
    finally:
        os.close(holder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "gone")
    assert remove_dead_pools(str(tmp_path)) == [names["locked"]]  # its holder let go: now it is dead too


def test_a_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_dead_pools(str(tmp_path / "absent")) == []
