"""Operator commands against a running server's HTTP frontend (wire-protocol.md §7.2).

`lmcache ping kvcache`, `lmcache describe kvcache`, `lmcache kvcache clear` and `lmcache quota
{set,get,delete,list}`, each with `--url`, `--format {terminal,json}` and `--timeout`. `json` prints the
server's answer as it came (pretty-printed); `terminal` prints tables. Any failure prints one line on stderr
(`lmcache: cannot reach http://localhost:8080: connection refused`), nothing on stdout, and exits 1; bad
flags exit 2 as argparse does. With `LMCACHE_HTTP_AUTH_TOKEN` set, every request carries it as a bearer
token (a server started with `--http-auth-token` needs it; an env var keeps it out of `ps` and history).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console

from lmcache.app import ops_render
from lmcache.app.arg_types import checked_number
from lmcache.app.ops_client import OpsClient, OpsError, check_url

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

__all__ = ("DEFAULT_URL", "EXIT_FAILURE", "OPS_COMMANDS", "add_ops_parsers", "run_ops")

DEFAULT_URL = "http://localhost:8080"
TOKEN_ENV = "LMCACHE_HTTP_AUTH_TOKEN"  # sent as a bearer token when set (the server's --http-auth-token)
EXIT_FAILURE = 1
OPS_COMMANDS = frozenset({"ping", "describe", "kvcache", "quota"})


def _url(text: str) -> str:
    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timeout(text: str) -> float:
    return checked_number(
        text, float, "seconds", lambda v: math.isfinite(v) and v > 0, "must be a number of seconds > 0"
    )


def _limit_gb(text: str) -> float:
    return checked_number(
        text, float, "a number of GiB", lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"
    )


def _ping(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    started = time.perf_counter()
    try:
        body = client.healthcheck()
    except OpsError as exc:
        if exc.status == 503:
            raise OpsError(f"kvcache at {client.url} is unhealthy: {exc.detail}", 503, exc.detail) from None
        raise
    elapsed_ms = (time.perf_counter() - started) * 1e3
    return body, partial(ops_render.render_ping, url=client.url, body=body, elapsed_ms=elapsed_ms)


def _describe(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.status()
    return body, partial(ops_render.render_describe, url=client.url, status=body)


def _clear(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.clear_l1(args.force)
    return body, partial(ops_render.render_clear, url=client.url, body=body)


def _quota_set(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.quota_set(args.salt, args.limit_gb)
    return body, partial(ops_render.render_quota, body=body)


def _quota_get(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.quota_get(args.salt)
    return body, partial(ops_render.render_quota, body=body)


def _quota_delete(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.quota_delete(args.salt)
    return body, partial(ops_render.render_quota_delete, body=body)


def _quota_list(client: OpsClient, args: argparse.Namespace) -> tuple[Any, Callable[[Console], None]]:
    body = client.quota_list()
    return body, partial(ops_render.render_quota_list, body=body)


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", type=_url, default=DEFAULT_URL, help=f"HTTP URL of the server (default: {DEFAULT_URL})."
    )
    common.add_argument(
        "--format",
        choices=["terminal", "json"],
        default="terminal",
        help="terminal: tables; json: the server's JSON answer (default: terminal).",
    )
    common.add_argument(
        "--timeout", type=_timeout, default=5.0, help="Seconds to wait for the server (default: 5)."
    )
    return common


def _leaf(group: Any, name: str, summary: str, handler: Any, common: argparse.ArgumentParser) -> Any:
    parser = group.add_parser(name, help=summary, description=summary, parents=[common])
    parser.set_defaults(_ops=handler)
    return parser


def add_ops_parsers(commands: Any) -> None:
    """Add `ping`, `describe`, `kvcache` and `quota` to the `lmcache` parser."""
    common = _common_flags()

    def group(name: str, summary: str) -> Any:
        parser = commands.add_parser(name, help=summary, description=summary)
        return parser.add_subparsers(dest="ops_target", metavar="TARGET", required=True)

    _leaf(group("ping", "Check that a server answers."), "kvcache", "GET /healthcheck.", _ping, common)
    _leaf(
        group("describe", "Show a server's state."),
        "kvcache",
        "GET /status: health, L1, eviction, L2 adapters, workers.",
        _describe,
        common,
    )
    clear = _leaf(
        group("kvcache", "Act on a server's KV cache."),
        "clear",
        "POST /cache/clear: drop the objects in L1 (those being read or written stay unless --force).",
        _clear,
        common,
    )
    clear.add_argument(
        "--force", action="store_true", help="Also drop objects that are locked for reading or being written."
    )
    quota = group("quota", "Per-cache-salt L1 quotas (used by the IsolatedLRU policy).")
    salt_help = "Cache salt; '_default' or '' for requests without one."
    setter = _leaf(quota, "set", "PUT /quota/SALT: set a salt's limit.", _quota_set, common)
    setter.add_argument("salt", metavar="SALT", help=salt_help)
    setter.add_argument("--limit-gb", type=_limit_gb, required=True, help="Limit in GiB (2^30 bytes), >= 0.")
    for name, summary, handler in (
        ("get", "GET /quota/SALT: a salt's limit and usage.", _quota_get),
        ("delete", "DELETE /quota/SALT: remove a salt's limit.", _quota_delete),
    ):
        _leaf(quota, name, summary, handler, common).add_argument("salt", metavar="SALT", help=salt_help)
    _leaf(quota, "list", "GET /quota: every salt with a limit.", _quota_list, common)


def run_ops(args: argparse.Namespace, transport: httpx.BaseTransport | None = None) -> int:
    """Run one operator command; returns the exit status. `transport` lets tests stand in for a server."""
    handler = args._ops
    try:
        token = os.environ.get(TOKEN_ENV) or None
        with OpsClient(args.url, args.timeout, transport, token=token) as client:
            body, render = handler(client, args)
    except OpsError as exc:
        print(f"lmcache: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.format == "json":
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        # A pipe gets wide lines (nothing folded for grep); a terminal gets its own width.
        render(Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 160))
    return 0
