"""The `lmcache bench` flags, apart from the benchmarks so that building the parser never imports torch.

`lmcache ping|describe|quota` and `--help` start in well under a second this way; `bench.py` (torch, the
transfer code) is imported only when a benchmark runs. `--help` shows every default.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmcache.app import bench_l2
from lmcache.app.arg_types import checked_number
from lmcache.domain.transfer_modes import TRANSFER_MODES

__all__ = ("DEFAULT_HTTP_PORT", "DefaultsFormatter", "add_bench_parser")

DEFAULT_HTTP_PORT = 8080  # the server's --http-port default


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to each flag's help, except where there is no default to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _run_id(text: str) -> int:
    return checked_number(
        text,
        lambda t: int(t, 16),
        "up to 8 hex digits",
        lambda v: 0 <= v < 1 << 32,
        "expected up to 8 hex digits",
    )


def add_bench_parser(commands: Any) -> None:
    """Add `bench server` and `bench l2` to the `lmcache` parser."""
    bench = commands.add_parser("bench", help="Benchmarks and checks against a running server.")
    sub = bench.add_subparsers(dest="bench_command", metavar="TARGET", required=True)
    p = sub.add_parser(
        "server",
        help="Store/retrieve round trips against a running lmcache server.",
        description="Drive a running server like an engine: per request a cold lookup (must miss), a "
        "store, a warm lookup (must hit), a retrieve and a checksum comparison. Each run uses its own "
        "keys (a run id in the tokens), so it can be repeated against the same server.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--rpc-url", default="tcp://localhost:5555", help="ZMQ URL of the server.")
    p.add_argument(
        "--url",
        default=None,
        help="HTTP URL of the server, for checksums computed by the server and the lock check after the "
        "run; '' skips both (default: http://<host of --rpc-url>:<--http-port>).",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help="The server's --http-port, used when --url is not given.",
    )
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
    p.add_argument(
        "--run-id",
        type=_run_id,
        default=None,
        metavar="HEX",
        help="Up to 8 hex digits placed in every request's tokens, so each run's keys are its own; giving "
        "an earlier run's id repeats its keys (its cold lookups then hit). Default: a random id, printed.",
    )
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
    l2 = sub.add_parser(
        "l2", help="Store/load throughput and checks of one L2 adapter.", formatter_class=DefaultsFormatter
    )
    bench_l2.add_arguments(l2)
