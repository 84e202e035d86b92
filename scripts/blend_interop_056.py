#!/usr/bin/env python3
"""Compare `cb_unified_lookup` between the published LMCache 0.5.6 server and ours, driven by 0.5.6's client.

Not a test (CI has no 0.5.6): run it with the python of a scratch virtualenv that has `lmcache==0.5.6`
installed, OUTSIDE this repository, with usage tracking off:

    python3 -m venv /work/venv056
    DO_NOT_TRACK=1 LMCACHE_TRACK_USAGE=false /work/venv056/bin/pip install torch==2.13.0 lmcache==0.5.6
    DO_NOT_TRACK=1 LMCACHE_TRACK_USAGE=false /work/venv056/bin/python scripts/blend_interop_056.py \
        --ours .venv/bin/lmcache --theirs /work/venv056/bin/lmcache [--scenarios 20]

Both servers run `lmcache server --engine-type blend --chunk-size 16` on loopback. For each, a client
built from 0.5.6's own classes (`RequestClientFactory`, `create_transfer_context(..., mode=
"lmcache_driven")`) registers a CPU KV cache, sends the same stores and the same lookups, polling each
lookup until it is not None. Scenarios: the V5 table of cacheblend.md §3.6, then random RAG prompts
(random documents stored behind random system prompts, queried shuffled behind new system prompts and
fillers at unaligned offsets). Every answer (prefix coverage, every match with its hash, the segmented
list) must be equal; the script prints each difference and exits 1 on any.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the shared server launcher
from lmcache.v1.multiprocess.custom_types import CBMatchResult, IPCCacheServerKey
from lmcache.v1.multiprocess.group_view import EngineGroupInfo
from lmcache.v1.multiprocess.transfer_context.worker_transfer import create_transfer_context
from lmcache.v1.multiprocess.transport.factory import RequestClientFactory
from lmcache.v1.platform.kv_wrap import wrap_one_kv_cache
from server_process import ServerProcess

CS = 16
VOCAB = 32000
ENV = {**os.environ, "DO_NOT_TRACK": "1", "LMCACHE_TRACK_USAGE": "false"}


class Server:
    """One `lmcache server` process (ours or 0.5.6) with a registered CPU engine."""

    def __init__(self, name: str, binary: str, instance_id: int) -> None:
        self.name = name
        log = Path(f"/tmp/blend_interop_{name}.log")
        log.unlink(missing_ok=True)  # one run's log (the launcher appends)
        self.server = ServerProcess(
            *("--engine-type", "blend", "--chunk-size", str(CS)),
            l1_gb="0.25",
            command=(binary, "server"),
            env=ENV,
            log_level=None,
            log_path=log,
        ).start(wait=False)
        self.client = RequestClientFactory.create(self.server.url)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.client.noop().result(timeout=2) == "OK":
                    break
            except Exception:
                pass
            if not self.server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not start (see {self.server.log_path})")
            time.sleep(0.5)
        self.kv = {f"layer.{i}": torch.zeros(2, 64, 16, 2, 8, dtype=torch.float16) for i in range(2)}
        self.ctx = create_transfer_context(
            self.kv, instance_id=instance_id, req_client=self.client, mode="lmcache_driven"
        )
        self.ctx.register(self.kv, "m", 1, 1, 60.0, {"kv_layout": "NHD"}, [EngineGroupInfo(0, (0, 1), 16)])
        self.instance_id = instance_id

    def store(self, tokens: list[int], rid: str) -> bool:
        """Store the full chunks of `tokens` as worker 0 (blocks 1..n), then end the session."""
        n = len(tokens) // CS
        key = IPCCacheServerKey("m", 1, 0, tuple(tokens), 0, n * CS, rid, "", None, 1)
        blocks = [list(range(1, n + 1))]
        ok = self.client.store(key, self.instance_id, blocks, b"stub_ipc_handle").result(timeout=30)
        self.client.end_session(rid).result(timeout=30)
        return bool(ok[1])

    def lookup(self, tokens: list[int], rid: str) -> tuple[Any, int]:
        """`cb_unified_lookup` polled until it is not None; the answer and the number of calls."""
        key = IPCCacheServerKey("m", 1, None, tuple(tokens), 0, len(tokens), rid, "", None, 1)
        for polls in range(1, 500):
            result = self.client.cb_unified_lookup(key, 1).result(timeout=30)
            if result is not None:
                self.client.end_session(rid).result(timeout=30)
                return result, polls
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: cb_unified_lookup of {rid} never answered")

    def retrieve(
        self, tokens: list[int], rid: str, matches: list[Any], table: list[int]
    ) -> tuple[bytes, bool]:
        """`cb_retrieve_pre_computed` of worker 0 with one block table."""
        key = IPCCacheServerKey("m", 1, 0, tuple(tokens), 0, len(tokens), rid, "", None, 1)
        future = self.client.cb_retrieve_pre_computed(
            key, matches, [table], self.instance_id, b"stub_ipc_handle"
        )
        reply = future.result(timeout=30)
        return (bytes(reply[0]), bool(reply[1]))

    def stop(self) -> None:
        """Close the client and SIGTERM the server."""
        try:
            self.ctx.close() if hasattr(self.ctx, "close") else None
            self.client.close()
        finally:
            self.server.stop()


Row = tuple[int, int, int, int, str]


def _norm(result: Any) -> tuple[int, list[Row], list[Row]]:
    def rows(ms: Any) -> list[Row]:
        return [(m.old_st, m.old_ed, m.cur_st, m.cur_ed, bytes(m.hash).hex()) for m in ms]

    segmented = rows(result.segmented_prefix_segments)
    return (result.prefix_coverage_tokens, rows(result.non_prefix_segments), segmented)


def v5(s: list[int]) -> tuple[list[tuple[list[int], str]], list[tuple[list[int], str]]]:
    """The live V5 table of cacheblend.md §3.6."""
    stores = [(s, "v5-store")]
    queries = [
        ([7] * 5 + s[16:48] + [8] * 3, "v5-q1"),
        (s[0:32] + [9] * 4 + s[32:48], "v5-q2"),
        (s[0:16] + [5] * 3 + s[0:16], "v5-q3"),
    ]
    return stores, queries


def rag(seed: int) -> tuple[list[tuple[list[int], str]], list[tuple[list[int], str]]]:
    """Documents stored behind system prompts, queried shuffled behind others (some at unaligned offsets)."""
    rng = random.Random(seed)
    docs = [[rng.randrange(VOCAB) for _ in range(CS * rng.randint(1, 3))] for _ in range(6)]
    stores, queries = [], []
    for i in range(rng.randint(1, 3)):
        prompt = [rng.randrange(VOCAB) for _ in range(CS * rng.randint(1, 2))]
        for doc in rng.sample(docs, rng.randint(2, 4)):
            prompt += doc
        stores.append((prompt, f"rag{seed}-s{i}"))
    for i in range(3):
        query = [rng.randrange(VOCAB) for _ in range(rng.randint(0, 2 * CS))]
        for doc in rng.sample(docs, rng.randint(2, 5)):
            query += doc + [rng.randrange(VOCAB) for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.3 and stores:
            query = stores[0][0][: CS * 2] + query  # a shared prefix too
        queries.append((query, f"rag{seed}-q{i}"))
    return stores, queries


def gates(servers: list[Server]) -> int:
    """Handshake and the retrieve gates (empty list, defer, straddle) on the V5 store; returns differences.

    The scatter itself differs by design: 0.5.6 cannot scatter on CPU and answers False; ours answers
    True (cacheblend.md §4.4). It is printed, not counted.
    """
    inv = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = torch.arange(128, dtype=torch.float64)[:, None] * inv[None, :]
    query = [7] * 5 + list(range(1016, 1048)) + [8] * 3
    answers: list[list[Any]] = []
    for srv in servers:
        cache = torch.cat([angles.cos(), angles.sin()], dim=1).half()
        srv.client.cb_register_rope(
            srv.instance_id, [wrap_one_kv_cache(cache)], 8, True, [], [], [], ""
        ).result(30)
        got: list[Any] = [srv.client.cb_protocol_handshake(1).result(timeout=30)]
        for rid, pick, table in (
            ("g-empty", [], [10]),
            ("g-defer", [1], [10]),
            ("g-straddle", [0, 1], [10, 11]),
            ("g-scatter", [0, 1], [10, 11, 12]),
        ):
            key = IPCCacheServerKey("m", 1, None, tuple(query), 0, len(query), rid, "", None, 1)
            result = None
            while result is None:
                result = srv.client.cb_unified_lookup(key, 1).result(timeout=30)
            matches = list(result.non_prefix_segments)
            assert all(isinstance(m, CBMatchResult) for m in matches)
            got.append((rid, srv.retrieve(query, rid, [matches[i] for i in pick], table)))
            srv.client.end_session(rid).result(timeout=30)
        answers.append(got)
        srv.cache = cache  # type: ignore[attr-defined]  (keep the SHM segment alive)
    differences = 0
    for theirs, ours in zip(*answers, strict=True):
        expected_departure = isinstance(ours, tuple) and ours[0] == "g-scatter"
        same = theirs == ours
        differences += not same and not expected_departure
        label = "same" if same else ("by design" if expected_departure else "DIFF")
        print(f"{label:>9} 0.5.6={theirs} ours={ours}")
    return differences


def main() -> int:
    """Run every scenario on both servers and compare; exit status 1 on any difference."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--ours", required=True, help="Our `lmcache` executable.")
    parser.add_argument("--theirs", required=True, help="The 0.5.6 `lmcache` executable.")
    parser.add_argument("--scenarios", type=int, default=20, help="Random RAG scenarios after V5.")
    args = parser.parse_args()
    servers = [Server("lmcache-0.5.6", args.theirs, 1000), Server("ours", args.ours, 1000)]
    differences = compared = 0
    try:
        scenarios = [v5(list(range(1000, 1048)))] + [rag(seed) for seed in range(args.scenarios)]
        first = True
        for stores, queries in scenarios:
            for tokens, rid in stores:
                oks = [srv.store(tokens, rid) for srv in servers]
                if oks != [True, True]:
                    print(f"store {rid}: {oks}")
            time.sleep(0.2)  # 0.5.6 commits a store after its reply
            for tokens, rid in queries:
                (a, polls_a), (b, polls_b) = (srv.lookup(tokens, rid) for srv in servers)
                compared += 1
                same = _norm(a) == _norm(b)
                differences += not same
                prefix, matches, segmented = _norm(b)
                shown = [(m[0], m[2], m[4][:8]) for m in matches]
                verdict = "same" if same else "DIFF"
                polls = f"{polls_a}/{polls_b}"
                print(f"{verdict} {rid:>12} polls={polls} prefix={prefix:<3} matches={shown} seg={segmented}")
                if not same:
                    print(f"     0.5.6: {_norm(a)}\n     ours : {_norm(b)}")
            if first:  # right after the V5 store: the retrieve gates
                first = False
                differences += gates(servers)
    finally:
        for srv in servers:
            srv.stop()
    print(f"{compared} lookups compared, {differences} different")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
