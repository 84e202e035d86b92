"""The POSIX shared-memory segments a process session maps, so the harness can remove what its vLLM leaked.

vLLM's processes talk through Python `multiprocessing.shared_memory` segments (`/dev/shm/psm_*`, about
400 MB in all for our runs). vLLM 0.32 SIGKILLs its engine and worker processes right after a SIGTERM, and
the harness SIGKILLs the whole session after a grace period, so the resource tracker that would unlink them
dies too and the segments stay until reboot. Other programs on the machine (another engineer's vLLM) use
`psm_*` names as well, so only segments a process of *our* session mapped or held open are removed: they
are collected from `/proc/<pid>/maps` and `/proc/<pid>/fd` while the processes live.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

__all__ = ("SHM_DIR", "remove_segments", "session_segments")

SHM_DIR = Path("/dev/shm")
_MAPPED = re.compile(r"\s/dev/shm/(psm_[A-Za-z0-9_]+)$")


def _session_of(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
    return int(fields[3]) if len(fields) > 3 else None


def _segments_of(pid: str) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            match = _MAPPED.search(line)  # a " (deleted)" suffix (already unlinked) does not match
            if match:
                found.add(match.group(1))
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("/dev/shm/psm_") and not target.endswith(" (deleted)"):
                    found.add(target.removeprefix("/dev/shm/"))
    return found


def session_segments(session_id: int) -> set[str]:
    """Names of the `psm_*` segments that live processes of session `session_id` map or hold open."""
    found: set[str] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session_of(entry.name) == session_id:
            found |= _segments_of(entry.name)
    return found


def remove_segments(names: set[str]) -> list[str]:
    """Unlink those of `names` that still exist and belong to us; returns the ones removed."""
    removed = []
    for name in sorted(names):
        path = SHM_DIR / name
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_uid != os.getuid():
                continue
            path.unlink()
            removed.append(name)
    return removed
