"""A deterministic engine-like workload over the traced storage engine, for trace and replay tests.

Requests look up a prompt (one row per rank), read and release their hits like a retrieve does, store
their misses (sometimes aborting), and the eviction loop steps every few requests; the fake clock moves so
that some locks of "dead" clients expire. Every lookup's live hit count is kept, in order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmcache.adapters.trace.recorder import LctTraceRecorder
from lmcache.app.trace_wiring import PRODUCER
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.eviction import IsolatedLruPolicy, LruPolicy, NoopPolicy
from lmcache.domain.keys import ObjectKey
from lmcache.domain.prefetch_controller import PrefetchRequest
from lmcache.domain.session_types import PrefetchJob
from lmcache.domain.trace_hooks import (
    TracedEvictionLoop,
    TracedL1Manager,
    TracedPrefetchController,
    TracedQuotaTable,
)
from tests.fakes.clock import FakeClock

if TYPE_CHECKING:
    from pathlib import Path

    from lmcache.ports.trace import TraceSink

OBJ = 64 * 1024
RANK = (1 << 24) | (1 << 8)


def config_json(l1_bytes: int, policy: str) -> str:
    return json.dumps(
        {"chunk_size": 256, "l1": {"l1_size_gb": l1_bytes / 2**30, "eviction_policy": policy}, "l2": {}}
    )


@dataclass
class Workload:
    tracer: TraceSink
    l1_bytes: int = 64 * OBJ
    policy: str = "LRU"
    seed: int = 0
    clock: FakeClock = field(default_factory=FakeClock)
    hits: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.quotas = TracedQuotaTable(tracer=self.tracer)
        policy = {"LRU": LruPolicy(), "IsolatedLRU": IsolatedLruPolicy(self.quotas), "noop": NoopPolicy()}[
            self.policy
        ]
        self.l1 = TracedL1Manager(ArenaAllocator(self.l1_bytes, 4096), policy, self.clock, tracer=self.tracer)
        self.loop = TracedEvictionLoop(self.l1, 0.8, 0.2, tracer=self.tracer)
        self.prefetch = TracedPrefetchController(self.l1, None, [], tracer=self.tracer)  # type: ignore[arg-type]
        self.rng = random.Random(self.seed)

    def keys(self, prompt: int, chunks: int, rank: int, salt: str) -> list[ObjectKey]:
        return [
            ObjectKey(bytes([prompt % 251, c, prompt // 251]) * 4, "m", RANK + rank, 0, salt)
            for c in range(chunks)
        ]

    def request(
        self,
        prompt: int,
        chunks: int = 6,
        ranks: int = 1,
        readers: int = 1,
        salt: str = "",
        dead: bool = False,
    ) -> None:
        rows = [self.keys(prompt, chunks, r, salt) for r in range(ranks)]
        job = PrefetchJob()
        self.prefetch.run_job_now(PrefetchRequest(rows, [OBJ] * ranks, readers), job)
        hit = job.result
        self.hits.append(hit)
        dead = dead or self.rng.random() < 0.03  # a client that dies holding its locks: the TTL frees them
        for row in rows:
            if not dead:
                for k in row[:hit]:
                    self.l1.readers(k)
                    self.l1.extent(k)
                self.l1.unlock_read(row[:hit], readers)
            extents = self.l1.reserve(row[hit:], OBJ)
            written = [k for k, e in zip(row[hit:], extents, strict=True) if e is not None]
            if self.rng.random() < 0.05:
                self.l1.abort(written)
            else:
                self.l1.finish(written)

    def run(self, n: int, prompts: int = 40, salts: tuple[str, ...] = ("",)) -> list[int]:
        rng = self.rng
        for i in range(n):
            self.clock.advance(rng.choice((0.01, 0.05, 0.2)) if rng.random() > 0.01 else 400.0)
            prompt = int(rng.paretovariate(1.2)) % prompts
            self.request(
                prompt,
                chunks=rng.randint(2, 8),
                ranks=rng.choice((1, 1, 2)),
                readers=rng.choice((1, 2)),
                salt=rng.choice(salts),
            )
            if i % 5 == 0:
                self.loop.step()
            if i % 97 == 50:
                self.l1.reap_expired()
            if i % 211 == 100:
                self.l1.delete(self.keys(rng.randrange(prompts), 3, 0, salts[0]))
            if i % 149 == 7:
                self.l1.touch(self.keys(rng.randrange(prompts), 2, 0, salts[0]))
        self.request(0, chunks=2, salt=salts[0])
        self.request(0, chunks=2, salt=salts[0], dead=True)  # ends holding the locks of a hit
        return self.hits


def record_trace(
    path: Path,
    n: int = 400,
    l1_bytes: int = 64 * OBJ,
    policy: str = "LRU",
    rotate_bytes: int = 1 << 30,
    **kw: object,
) -> list[int]:
    """Run the workload through a real recorder into `path`; the live hit counts."""
    clock = FakeClock()
    recorder = LctTraceRecorder(
        path,
        config_json=config_json(l1_bytes, policy),
        level_meta={"producer": PRODUCER},
        queue_size=1 << 20,
        rotate_bytes=rotate_bytes,
        flush_interval_s=0.001,
        monotonic=clock.monotonic,
    )
    recorder.start()
    try:
        work = Workload(recorder, l1_bytes, policy, clock=clock)
        if policy == "IsolatedLRU":
            work.quotas.set("a", 20 * OBJ)
            work.quotas.set("b", 30 * OBJ)
            return work.run(n, salts=("a", "b"))
        return work.run(n, **kw)  # type: ignore[arg-type]
    finally:
        recorder.close()
