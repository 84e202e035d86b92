"""The harness removes the `psm_*` segments its own (vLLM) processes leave when killed, and no others.

No vLLM needed: a child in its own session creates segments the way vLLM's processes do (Python
`multiprocessing.shared_memory`, resource tracker included) and is SIGKILLed with its whole session, as
vLLM's engine is; its segments then outlive it, exactly the leak the harness must clean up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

from tests.e2e_vllm.shm_segments import SHM_DIR, remove_segments, session_segments

CHILD = """
import sys, time
from multiprocessing import shared_memory
mapped = shared_memory.SharedMemory(create=True, size=1 << 16)
held = shared_memory.SharedMemory(create=True, size=1 << 16)
print(mapped.name, held.name, flush=True)
time.sleep(120)
"""


def test_segments_of_a_killed_session_are_found_and_removed() -> None:
    bystander = shared_memory.SharedMemory(create=True, size=1 << 12)  # another program's psm_* segment
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None
        names = set(child.stdout.readline().split())
        assert len(names) == 2 and all(n.startswith("psm_") for n in names)
        found = session_segments(child.pid)
        assert names <= found and bystander.name not in found
        os.killpg(child.pid, signal.SIGKILL)  # the child and its resource tracker, as vLLM's shutdown
        child.wait(10)
        time.sleep(0.2)
        leaked = {n for n in names if (SHM_DIR / n).exists()}
        assert leaked == names  # without the harness's clean-up these stay in /dev/shm
        assert sorted(remove_segments(found)) == sorted(names)
        assert not any((SHM_DIR / n).exists() for n in names)
        assert Path(SHM_DIR / bystander.name).exists()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        bystander.close()
        bystander.unlink()


def test_remove_segments_skips_missing_names() -> None:
    assert remove_segments({"psm_does_not_exist_lmcache_test"}) == []
