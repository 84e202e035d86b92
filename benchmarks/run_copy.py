"""Run copies in-process: one request's strided L1 <-> engine copy as bytes, as 8-byte words and as memmove.

Why `cpu_kv._copy_run` views both sides as 8-byte words: torch's uint8 copy loop is slower than its int64
loop on the same bytes. The layout is the 0.5.6 bench's (32 layers x K/V, 2,048 tokens of 8 x 128 fp16
per token = 256 MiB): each (layer, plane) is 4 MiB contiguous on the engine side and 8 pieces of 512 KiB,
one per chunk object, on the L1 side. Each variant runs on 1 and 2 threads (split by layer, as the
server splits a request), and every time is compared with one single-thread memcpy of the same bytes
timed in the same round.

    python benchmarks/run_copy.py [--layers 32] [--rounds 9]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Callable

PIECE = 256 * 8 * 128 * 2  # one chunk's K (or V) of one layer: 512 KiB
CHUNKS = 8
PLANES = 2


def variants(src: torch.Tensor, dst: torch.Tensor, layers: int) -> dict[str, Callable[[int, int], None]]:
    """Each variant's copy of layers [lo, hi): L1 objects (src) -> engine planes (dst), as a retrieve."""
    obj = PIECE * layers * PLANES

    def as_type(dtype: torch.dtype) -> Callable[[int, int], None]:
        size = dtype.itemsize
        s, d = src.view(dtype), dst.view(dtype)

        def run(lo: int, hi: int) -> None:
            for q in range(lo * PLANES, hi * PLANES):
                engine = d.narrow(0, q * CHUNKS * PIECE // size, CHUNKS * PIECE // size).view(CHUNKS, -1)
                engine.copy_(s.as_strided((CHUNKS, PIECE // size), (obj // size, 1), q * PIECE // size))

        return run

    def memmove(lo: int, hi: int) -> None:
        s, d = src.data_ptr(), dst.data_ptr()
        for q in range(lo * PLANES, hi * PLANES):
            for c in range(CHUNKS):
                ctypes.memmove(d + (q * CHUNKS + c) * PIECE, s + c * obj + q * PIECE, PIECE)

    return {"bytes (uint8)": as_type(torch.uint8), "words (int64)": as_type(torch.int64), "memmove": memmove}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the server: parallelism comes from its copy threads
    nbytes = PIECE * CHUNKS * PLANES * args.layers
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    base = torch.empty_like(dst)
    pool = ThreadPoolExecutor(1)
    cases = variants(src, dst, args.layers)
    times: dict[tuple[str, int], list[float]] = {(n, t): [] for n in cases for t in (1, 2)}
    memcpy: list[float] = []
    for _ in range(args.rounds):
        for (name, threads), out in times.items():
            run, half = cases[name], args.layers // 2
            t0 = time.perf_counter()
            if threads == 1:
                run(0, args.layers)
            else:
                other = pool.submit(run, half, args.layers)
                run(0, half)
                other.result()
            out.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ctypes.memmove(base.data_ptr(), src.data_ptr(), nbytes)
        memcpy.append(time.perf_counter() - t0)
    if not torch.equal(dst, src):
        raise RuntimeError("the copies did not cover every byte")
    ref = statistics.median(memcpy)
    print(f"{nbytes / 2**20:.0f} MiB per copy; memcpy (1 thread, contiguous) p50 {ref * 1e3:.1f} ms")
    print(f"{'variant':16s} threads  p50 ms  min ms  memcpy/variant")
    for (name, threads), out in times.items():
        p50 = statistics.median(out)
        print(f"{name:16s} {threads:7d} {p50 * 1e3:7.1f} {min(out) * 1e3:7.1f} {ref / p50:10.2f}x")
    pool.shutdown()


if __name__ == "__main__":
    main()
