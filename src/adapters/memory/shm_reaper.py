"""Finds and removes the L1 SHM pools of servers that died without unlinking them.

A server SIGKILLed together with its resource tracker (OOM kill, a container's power loss) leaves its
`/dev/shm/lmcache_l1_pool_<pid>_<hex>` segment, the size of its whole L1, and the next start picks a new
automatic name, so nothing would ever remove it. At start-up a server removes such segments, and only
segments that are surely ours and surely dead:

- the name is an automatic pool name (`lmcache_l1_pool_<pid>_<8 hex>`; a name given with `--shm-name` is
  reused, and so replaced, by its next start instead),
- the file belongs to our user and is a regular file,
- no process with that pid exists here (a live pid, ours or another user's, keeps it), and
- no process holds the pool's lock: every server keeps a shared `flock` on its own pool while it runs
  (`hold_pool_lock`), which also protects a live server in another pid namespace sharing /dev/shm.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
from pathlib import Path

__all__ = ("SHM_DIR", "hold_pool_lock", "pid_alive", "remove_dead_pools")

logger = logging.getLogger(__name__)
SHM_DIR = "/dev/shm"
_AUTOMATIC = re.compile(r"^lmcache_l1_pool_(\d+)_[0-9a-f]{8}$")


def hold_pool_lock(name: str, shm_dir: str = SHM_DIR) -> int | None:
    """A descriptor holding a shared lock on our pool `name` (close it to let go); None if it cannot."""
    try:
        fd = os.open(Path(shm_dir) / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (another user's counts: it is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _unlocked(path: str) -> bool:
    """Whether no process holds the pool's lock (checked without blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _is_dead_pool(entry: os.DirEntry[str]) -> bool:
    match = _AUTOMATIC.match(entry.name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid() or pid_alive(pid):
        return False
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        return False
    return _unlocked(entry.path)


def remove_dead_pools(shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink the pools of dead servers (see the module docstring); returns their names."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(shm_dir))
    except OSError:
        return removed
    for entry in entries:
        if _is_dead_pool(entry):
            with contextlib.suppress(FileNotFoundError):
                Path(entry.path).unlink()
                removed.append(entry.name)
                logger.warning("Removed SHM pool %s left by a server that died (pid gone)", entry.name)
    return removed
