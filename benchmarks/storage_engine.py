"""Storage-engine micro-benchmark: the pure L1 index, arena, eviction and hashing, no bytes moved.

Run: python benchmarks/storage_engine.py [--objects 1000000] [--batch 64]

Prints, for N L1 objects: reserve+finish per object (with a plain dict insert as the baseline), lookup of
a 64-chunk prefix, eviction of 20% of the used bytes, index memory per object (tracemalloc), and chunk
hashing of 100k tokens against one plain blake3 call over the same packed bytes.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from array import array

from blake3 import blake3

from lmcache.adapters.system_clock import SystemClock
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.events import EvictionReason
from lmcache.domain.eviction import LruPolicy
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.keys import ObjectKey, pack_kv_rank
from lmcache.domain.l1_manager import L1Manager

OBJECT_BYTES = 4096
PREFIX = 64


def make_keys(n: int) -> list[ObjectKey]:
    rank = pack_kv_rank(1, 0)
    return [ObjectKey(i.to_bytes(32, "big"), "bench-model", rank, 0, "") for i in range(n)]


def make_l1(n: int) -> L1Manager:
    return L1Manager(ArenaAllocator(n * OBJECT_BYTES, OBJECT_BYTES), LruPolicy(), SystemClock())


def fill(l1: L1Manager, keys: list[ObjectKey], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(keys), batch):
        chunk = keys[i : i + batch]
        l1.reserve(chunk, OBJECT_BYTES)
        l1.finish(chunk)
    return time.perf_counter() - start


def bench_index(n: int, batch: int) -> None:
    keys = make_keys(n)
    gc.collect()
    start = time.perf_counter()
    baseline: dict[ObjectKey, int] = {}
    for i, key in enumerate(keys):
        baseline[key] = i
    dict_s = time.perf_counter() - start
    del baseline
    l1 = make_l1(n)
    fill_s = fill(l1, keys, batch)
    print(
        f"reserve+finish (batches of {batch}) {fill_s / n * 1e6:8.2f} us/object | "
        f"dict insert {dict_s / n * 1e6:.2f} us/object | {fill_s / dict_s:.1f}x"
    )

    rng = random.Random(1)
    lookups = 2000
    starts = [rng.randrange(0, n - PREFIX) for _ in range(lookups)]
    t0 = time.perf_counter()
    for s in starts:
        window = keys[s : s + PREFIX]
        hits = l1.lock_prefix(window)
        l1.unlock_read(window[:hits])
    lock_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in starts:
        l1.prefix_len(keys[s : s + PREFIX])
    peek_s = time.perf_counter() - t0
    print(
        f"lookup of a {PREFIX}-chunk prefix: lock+unlock {lock_s / lookups * 1e6:8.1f} us | "
        f"presence only {peek_s / lookups * 1e6:.1f} us"
    )

    used = l1.stats().used_bytes
    t0 = time.perf_counter()
    count, freed = l1.evict(int(used * 0.2), EvictionReason.WATERMARK)
    evict_ms = (time.perf_counter() - t0) * 1e3
    print(
        f"eviction of 20% ({count} objects, {freed / 2**20:.0f} MiB): {evict_ms:8.1f} ms "
        f"({evict_ms * 1e3 / max(count, 1):.2f} us/object)"
    )


def bench_memory(n: int, batch: int) -> None:
    gc.collect()
    tracemalloc.start()
    keys = make_keys(n)
    keys_only = tracemalloc.get_traced_memory()[0]
    l1 = make_l1(n)
    fill(l1, keys, batch)
    total = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"index memory per object: {(total - keys_only) / n:6.0f} B (+ {keys_only / n:.0f} B for the "
        f"ObjectKey itself) over {l1.object_count} objects"
    )


def bench_hashing(tokens_n: int = 100_000, chunk: int = 256, repeat: int = 20) -> None:
    rng = random.Random(2)
    tokens = [rng.randrange(0, 1 << 17) for _ in range(tokens_n)]
    hasher = TokenHasher(chunk)
    native = array("I", tokens)
    swapped = array("I", native)
    swapped.byteswap()
    chunks = tokens_n // chunk
    raw = swapped.tobytes()[: chunks * chunk * 4]
    best_ours = best_chain = best_raw = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        hasher.chunk_hashes(tokens)  # from a list of Python ints, as decoded from msgpack
        best_ours = min(best_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        hasher.chain(hasher.none_hash, native, 0, chunks)  # already packed: the chain alone
        best_chain = min(best_chain, time.perf_counter() - t0)
        t0 = time.perf_counter()
        blake3(raw).digest()
        best_raw = min(best_raw, time.perf_counter() - t0)
    mb = len(raw) / 1e6
    print(
        f"hashing {tokens_n} tokens ({chunks} chunks of {chunk}): list->digests {best_ours * 1e3:.2f} ms "
        f"= {mb / best_ours:.0f} MB/s ({tokens_n / best_ours / 1e6:.1f} M tokens/s) | chain over packed "
        f"tokens {best_chain * 1e3:.2f} ms = {mb / best_chain:.0f} MB/s | plain blake3 one call "
        f"{best_raw * 1e3:.3f} ms = {mb / best_raw:.0f} MB/s | ratio {best_ours / best_raw:.1f}x "
        f"(chain only {best_chain / best_raw:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000, help="L1 objects to index")
    parser.add_argument("--batch", type=int, default=64, help="keys per reserve/finish call")
    parser.add_argument("--skip-memory", action="store_true", help="skip the tracemalloc pass")
    args = parser.parse_args()
    print(f"storage engine, {args.objects} objects of {OBJECT_BYTES} B (accounting only)")
    bench_index(args.objects, args.batch)
    if not args.skip_memory:
        bench_memory(args.objects, args.batch)
    bench_hashing()


if __name__ == "__main__":
    main()
