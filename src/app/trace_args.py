"""The `lmcache trace info|replay|sweep` flags (the commands themselves are in `trace_cli.py`).

Inputs are `.lct` files (one trace, or the parts of a rotated one in any order) or a lookup-hash log (a
`--lookup-hash-log-dir` directory or its `.jsonl` files), which needs `--chunk-bytes`. Engine overrides
take the `lmcache server` flag names; `sweep` takes comma-separated lists for `--l1-size-gb` and
`--eviction-policy`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, get_args

from lmcache.app.arg_types import checked_number
from lmcache.domain.eviction import EvictionPolicyName

__all__ = ("add_trace_parser", "parse_list")

_POLICIES: tuple[str, ...] = get_args(EvictionPolicyName)


def _positive_int(text: str) -> int:
    return checked_number(text, int, "an integer", lambda v: v >= 1, "must be >= 1")


def _number(text: str) -> float:
    return checked_number(text, float, "a number", math.isfinite, "must be finite")


def parse_list(text: str, kind: str) -> list[Any]:
    """A comma-separated sweep list: GB sizes (> 0, at most 64 of them) or policy names.

    Raises:
        argparse.ArgumentTypeError: An empty item, a bad number or an unknown policy.
    """
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items) or len(items) > 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64 comma-separated values, got {text!r}")
    if kind == "policy":
        bad = [item for item in items if item not in _POLICIES]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown policy {bad[0]!r} (choose from {', '.join(_POLICIES)})"
            )
        return list(dict.fromkeys(items))
    sizes = [_number(item) for item in items]
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be > 0 GB, got {text!r}")
    return sorted(set(sizes))


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="+", metavar="FILE", help=".lct trace file(s), or a lookup-hash log dir/files."
    )
    p.add_argument(
        "--allow-truncated",
        action="store_true",
        help="Read a trace whose last frame was cut short (a killed server) up to that frame.",
    )
    p.add_argument(
        "--chunk-bytes",
        type=_positive_int,
        default=None,
        metavar="BYTES",
        help="Bytes of one chunk object; required for a lookup-hash log (it records no sizes).",
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="Output format.")


def _engine(p: argparse.ArgumentParser, sweep: bool) -> None:
    if sweep:
        p.add_argument(
            "--l1-size-gb",
            type=lambda t: parse_list(t, "size"),
            required=True,
            metavar="GB[,GB...]",
            help="L1 sizes to replay, comma-separated (e.g. 1,2,4,8,16).",
        )
        p.add_argument(
            "--eviction-policy",
            type=lambda t: parse_list(t, "policy"),
            default=None,
            metavar="POLICY[,POLICY...]",
            help="Eviction policies to replay (default: the recorded one).",
        )
    else:
        p.add_argument("--l1-size-gb", type=_number, default=None, metavar="GB", help="Override the L1 size.")
        p.add_argument("--eviction-policy", choices=_POLICIES, default=None, help="Override the policy.")
    p.add_argument("--eviction-trigger-watermark", type=_number, default=None, metavar="RATIO")
    p.add_argument("--eviction-ratio", type=_number, default=None, metavar="RATIO")
    p.add_argument("--l1-align-bytes", type=_positive_int, default=None, metavar="BYTES")
    p.add_argument("--l1-write-ttl-seconds", type=_number, default=None, metavar="SECONDS")
    p.add_argument("--l1-read-ttl-seconds", type=_number, default=None, metavar="SECONDS")
    p.add_argument(
        "--no-l2",
        action="store_true",
        help="Do not simulate the recorded L2 tier (lookups find only what L1 holds).",
    )


def add_trace_parser(commands: Any) -> None:
    """Add `trace info|replay|sweep` to the `lmcache` parser."""
    trace = commands.add_parser("trace", help="Inspect, replay and sweep storage traces (.lct).")
    sub = trace.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="Header, duration, calls, bytes, distinct keys, reuse distances.")
    _inputs(info)
    info.add_argument(
        "--reuse-limit",
        type=_positive_int,
        default=2_000_000,
        metavar="N",
        help="Object accesses the reuse-distance summary covers (from the start).",
    )
    replay = sub.add_parser("replay", help="Re-run the calls against a fresh storage engine.")
    _inputs(replay)
    _engine(replay, sweep=False)
    sweep = sub.add_parser("sweep", help="Replay over several L1 sizes and policies, in parallel processes.")
    _inputs(sweep)
    _engine(sweep, sweep=True)
    sweep.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Processes (default: CPUs, at most one per run).",
    )
    sweep.add_argument(
        "--plot", default=None, metavar="PNG", help="Also write hit rate against L1 size (matplotlib)."
    )
