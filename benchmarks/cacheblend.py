"""CacheBlend benchmark: fingerprint match latency and CPU re-RoPE + scatter throughput.

Run: python benchmarks/cacheblend.py [--chunks 1000,100000,1000000] [--prompts 8192,32768]
                                      [--matches 4] [--dtypes float16,bfloat16] [--quick]

1. Match: a `FingerprintIndex` holding N chunk registrations (256-token chunks of random documents)
   matches a prompt of 8k / 32k tokens in which a quarter of the text is indexed documents at unaligned
   offsets. Printed with the chunk hashing of the same prompt (what every prefix lookup already pays)
   measured in the same run. Target: a 32k prompt against 1M chunks under 5 ms.
2. Re-RoPE + scatter: a Llama-3-8B-like engine (32 layers of `[2, NB, 16, 8, 128]`, NHD) and stored
   chunks re-rotated from one position to another and written token by token into its blocks (the
   `cb_retrieve_pre_computed` work), against a plain memcpy of the same bytes in the same run, on one
   thread like the server. Target: 0.3x memcpy or better.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time

import numpy as np
import torch

from lmcache.adapters.transfer.blend_scatter import CpuBlendScatter
from lmcache.adapters.transfer.fingerprint_numpy import NumpyFingerprintProbe
from lmcache.domain.arena import Extent
from lmcache.domain.blend_index import FingerprintIndex
from lmcache.domain.blend_rope import CacheShape, RopeSpec, plan_rotation
from lmcache.domain.blend_types import BlendScope
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.kv_layout import EngineGroup, TensorSpec, build_layout
from lmcache.ports.blend import ScatterItem

CS = 256
SCOPE = BlendScope("bench-model", 1, "")
VOCAB = 128_000


def _median_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def build_index(chunks: int, seed: int) -> tuple[FingerprintIndex, list[list[int]]]:
    """An index of `chunks` registrations: documents of 16 chunks, each behind its own 1-chunk prefix."""
    index = FingerprintIndex(CS, NumpyFingerprintProbe(), max_entries=max(chunks, 1))
    gen = np.random.default_rng(seed)
    docs: list[list[int]] = []
    per_doc = 16
    for d in range((chunks + per_doc - 1) // per_doc):
        n = min(per_doc, chunks - d * per_doc)
        prompt = gen.integers(0, VOCAB, (n + 1) * CS, dtype=np.uint32)
        hashes = [(d * 1000 + i).to_bytes(32, "big") for i in range(n + 1)]  # stand-ins for chain hashes
        index.register(SCOPE, prompt, 0, hashes)
        if len(docs) < 64:
            docs.append(prompt[CS:].tolist())
    return index, docs


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:  # noqa: PTH123 (Linux only; the benchmark says so)
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_match(chunk_counts: list[int], prompt_lens: list[int], repeats: int) -> None:
    print("== fingerprint match (256-token chunks, stride 1, a quarter of the prompt indexed) ==")
    head = f"{'indexed chunks':>15} {'prompt':>7} {'matches':>8} {'match ms':>9}"
    print(f"{head} {'chunk-hash ms':>14} {'ratio':>6}")
    hasher = TokenHasher(CS)
    for chunks in chunk_counts:
        rng = random.Random(chunks)
        gc.collect()
        rss = _rss_mib()
        started = time.perf_counter()
        index, docs = build_index(chunks, chunks)
        built = time.perf_counter() - started
        grown = _rss_mib() - rss
        for length in prompt_lens:
            prompt: list[int] = []
            while len(prompt) < length:
                if rng.random() < 0.25 and docs:
                    doc = rng.choice(docs)
                    prompt += doc[rng.randrange(0, len(doc) // 2) :][: 4 * CS]
                else:
                    prompt += [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 3 * CS))]
            prompt = prompt[:length]
            found = len(index.match(SCOPE, prompt))
            match_ms = _median_ms(lambda i=index, p=prompt: i.match(SCOPE, p), repeats)
            hash_ms = _median_ms(lambda p=prompt: hasher.chunk_hashes(p), repeats)
            ratio = match_ms / hash_ms if hash_ms else float("inf")
            print(f"{chunks:>15,} {length:>7} {found:>8} {match_ms:>9.3f} {hash_ms:>14.3f} {ratio:>5.2f}x")
        print(f"{'':>15} (index of {len(index):,} entries built in {built:.1f} s, {grown:.0f} MiB resident)")
        del index, docs


def _rig(dtype: torch.dtype, matches: int) -> tuple[CpuBlendScatter, list[ScatterItem], list[list[int]], int]:
    layers, heads, head_size, block = 32, 8, 128, 16
    blocks = matches * (CS // block) + 2 * (CS // block)
    shape = (2, blocks, block, heads, head_size)
    engine = [torch.zeros(shape, dtype=dtype) for _ in range(layers)]
    spec_t = TensorSpec(str(dtype).removeprefix("torch."), shape, tuple(engine[0].stride()))
    layout = build_layout(
        [spec_t] * layers, {"kv_layout": "NHD"}, [EngineGroup(0, tuple(range(layers)), block)], CS
    )
    rot = head_size
    inv = 500000.0 ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    angles = torch.arange(131072, dtype=torch.float64)[:, None] * inv[None, :]
    cache = torch.cat([angles.cos(), angles.sin()], dim=1).to(dtype)
    spec = RopeSpec(head_size, True, (), (), (), "", (CacheShape(cache.shape[0], rot, spec_t.dtype),))
    plan = plan_rotation(spec, layout, [0])
    size = layout.object_bytes
    arena = torch.randn(matches * size // 2, dtype=torch.float16).view(torch.uint8)
    scatter = CpuBlendScatter(layout, engine, arena, plan, [cache], {})
    items = [ScatterItem(Extent(i * size, size), 4096 + i * CS, 7 + i * CS) for i in range(matches)]
    table = list(range(blocks))
    return scatter, items, [table], matches * size


def _measure(dtype: torch.dtype, matches: int, repeats: int) -> tuple[int, float, float, float]:
    """Bytes, and median ms of the shifted scatter, the memcpy and the unshifted scatter, interleaved."""
    scatter, items, tables, nbytes = _rig(dtype, matches)
    scatter.check(items, tables)
    src = torch.empty(nbytes, dtype=torch.uint8).random_()
    dst = torch.empty_like(src)
    plain = [ScatterItem(i.extent, i.cur_st, i.cur_st) for i in items]
    scatter.scatter(items, tables)  # warm up
    runs: dict[str, list[float]] = {"shifted": [], "copy": [], "plain": []}
    jobs = (
        ("shifted", lambda: scatter.scatter(items, tables)),
        ("copy", lambda: dst.copy_(src)),
        ("plain", lambda: scatter.scatter(plain, tables)),
    )
    for _ in range(repeats):  # interleaved, so a noisy neighbour slows all three alike
        for name, fn in jobs:
            runs[name].append(_median_ms(fn, 1))
    shifted, copy, unshifted = (statistics.median(runs[k]) for k in ("shifted", "copy", "plain"))
    return nbytes, shifted, copy, unshifted


def bench_scatter(dtypes: list[str], matches: int, repeats: int) -> None:
    torch.set_num_threads(1)  # as the server runs its copies
    print(f"\n== re-RoPE + scatter: Llama-3-8B-like (32 layers, 8 KV heads, head 128), {matches} chunks ==")
    head = f"{'dtype':>9} {'bytes':>10} {'scatter GB/s':>13} {'memcpy GB/s':>12}"
    print(f"{head} {'ratio':>6} {'unshifted GB/s':>15}")
    for name in dtypes:
        nbytes, shifted_ms, copy_ms, plain_ms = _measure(getattr(torch, name), matches, repeats)
        gbps = nbytes / shifted_ms / 1e6
        copy_gbps = nbytes / copy_ms / 1e6
        print(
            f"{name:>9} {nbytes / 2**20:>8.0f}Mi {gbps:>13.2f} {copy_gbps:>12.2f} {gbps / copy_gbps:>5.2f}x "
            f"{nbytes / plain_ms / 1e6:>15.2f}"
        )
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", default="1000,100000,1000000", help="Indexed chunk counts (comma list).")
    parser.add_argument("--prompts", default="8192,32768", help="Prompt lengths in tokens (comma list).")
    parser.add_argument("--matches", type=int, default=4, help="Chunks scattered per retrieve.")
    parser.add_argument("--dtypes", default="float16,bfloat16", help="KV dtypes (comma list).")
    parser.add_argument("--repeats", type=int, default=9, help="Timed repetitions (median).")
    parser.add_argument("--quick", action="store_true", help="Small sizes (a smoke run).")
    args = parser.parse_args()
    chunks = [int(x) for x in args.chunks.split(",")] if not args.quick else [1000]
    prompts = [int(x) for x in args.prompts.split(",")] if not args.quick else [8192]
    bench_match(chunks, prompts, 3 if args.quick else args.repeats)
    bench_scatter(
        args.dtypes.split(","), 1 if args.quick else args.matches, 3 if args.quick else args.repeats
    )


if __name__ == "__main__":
    main()
