"""The `lmcache bench` flags, apart from the benchmarks so that building the parser never imports torch.

`lmcache ping|describe|quota` and `--help` start in well under a second this way; `bench.py` (torch, the
transfer code) is imported only when a benchmark runs.
"""

from __future__ import annotations

from typing import Any

from lmcache.app import bench_l2
from lmcache.domain.transfer_modes import TRANSFER_MODES

__all__ = ("add_bench_parser",)


def add_bench_parser(commands: Any) -> None:
    """Add `bench server` to the `lmcache` parser."""
    bench = commands.add_parser("bench", help="Benchmarks and checks against a running server.")
    sub = bench.add_subparsers(dest="bench_command", metavar="TARGET", required=True)
    p = sub.add_parser("server", help="Store/retrieve round trips against a running lmcache server.")
    p.add_argument("--rpc-url", default="tcp://localhost:5555", help="ZMQ URL of the server.")
    p.add_argument("--url", default=None, help="HTTP URL of the server (checksums through the server).")
    p.add_argument("--mode", choices=["cpu", "gpu"], default="cpu", help="Where the KV tensors live.")
    p.add_argument(
        "--transfer-mode",
        choices=TRANSFER_MODES,
        default="auto",
        help="auto = engine_driven on CPU, as LMCache's bench does.",
    )
    p.add_argument("--num-tokens", type=int, default=512, help="Tokens per request (full chunks are used).")
    p.add_argument(
        "--kvcache-shape-spec",
        default="(2,1024,16,8,128):float16:32",
        help="(2,NB,BS,NH,HS):dtype:layers of the simulated engine.",
    )
    p.add_argument("--start", type=int, default=0, help="First sequence number.")
    p.add_argument("--end", type=int, default=20, help="Sequence number to stop before.")
    p.add_argument("--interval", type=float, default=0.0, help="Seconds to sleep between phases.")
    p.add_argument("--format", choices=["text", "json"], default="text", help="Summary format.")
    p.add_argument("--output", default=None, help="Also write the summary to this file.")
    p.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for each RPC.")
    p.add_argument(
        "--trace",
        default=None,
        metavar="PATH",
        help="The server's --trace-output file: afterwards, replay it and check it reproduces every "
        "lookup's hits exactly (use a server no other client uses meanwhile).",
    )
    bench_l2.add_arguments(sub.add_parser("l2", help="Store/load throughput and checks of one L2 adapter."))
