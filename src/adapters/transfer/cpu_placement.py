"""Copy-thread placement: the threads of one split copy run on different CPUs for the copy's length.

Why: a scheduler may keep threads that were asleep on the CPU that woke them. On the development VM
(whose kernel packs lightly loaded tasks onto few vCPUs, `sched_vcpu_pack`), a perf timeline of the 0.5.6
bench's retrieve showed both halves of the copy taking turns on one vCPU in 4 ms slices while the other
vCPU idled: two copy threads moved no more than one. With the caller held on its CPU and the helpers kept
off it, the same retrieve took 17.8-18.0 ms p50 against 20.5-21.3 ms with `--no-kv-copy-pin`
(`benchmarks/real_client.py --only ours`, alternating runs). Pinning only the helpers did not help: the
caller followed them onto their CPU.

Each thread's own affinity mask is read before and restored after the copy, so the pin lasts one copy and
the rest of the server (and an operator's `taskset` or cpuset) keeps its placement. The helpers are not
pinned to one CPU each but to disjoint shares of the other allowed CPUs, leaving the scheduler free to
avoid a busy core on larger hosts. Where pinning is refused (a seccomp filter, a cpuset changed under us),
the copy runs where the scheduler put it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ("CopyPlacement", "pinned")

CpuSet = frozenset[int]


def _libc_getcpu() -> Callable[[], int] | None:
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn


class CopyPlacement:
    """Plans which CPUs each thread of one split copy may run on.

    Args:
        enabled: `--kv-copy-pin`; off, every plan is "anywhere" (None for each thread).
        allowed: The CPUs this process may use (default: `os.sched_getaffinity(0)` at each plan).
        current_cpu: The calling thread's CPU (default: glibc's `sched_getcpu`).
    """

    def __init__(
        self,
        enabled: bool = True,
        *,
        allowed: Callable[[], set[int]] | None = None,
        current_cpu: Callable[[], int] | None = None,
    ) -> None:
        self.enabled = enabled
        self._allowed = allowed or (lambda: os.sched_getaffinity(0))
        self._current = current_cpu or _libc_getcpu()

    def plan(self, threads: int) -> list[CpuSet | None]:
        """CPU sets for `threads` threads: [caller, helper 1, ...]; None where placement is left alone.

        The caller keeps the CPU it runs on; the other allowed CPUs are dealt round-robin into one share
        per helper (a helper shares a CPU only when there are fewer CPUs than helpers).
        """
        anywhere: list[CpuSet | None] = [None] * threads
        if not self.enabled or threads < 2:
            return anywhere
        try:
            allowed = sorted(self._allowed())
        except OSError:
            return anywhere
        if len(allowed) < 2:
            return anywhere
        here = self._current() if self._current is not None else -1
        if here not in allowed:
            here = allowed[0]
        others = [cpu for cpu in allowed if cpu != here]
        helpers = threads - 1
        if len(others) >= helpers:
            shares = [frozenset(others[k::helpers]) for k in range(helpers)]
        else:
            shares = [frozenset({others[k % len(others)]}) for k in range(helpers)]
        return [frozenset({here}), *shares]


@contextlib.contextmanager
def pinned(cpus: CpuSet | None) -> Iterator[None]:
    """Runs the block on `cpus` (the calling thread only), restoring the thread's own mask after."""
    if cpus is None:
        yield
        return
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    except OSError:  # refused or a CPU went away: run where the scheduler puts us
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
