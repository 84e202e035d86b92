"""HTTP fuzzer driven by the server's own OpenAPI schema (schemathesis + hypothesis).

Run: python benchmarks/chaos/fuzz_http.py [--examples 200] [--url http://HOST:PORT] [--token TOKEN]

Without `--url` it starts its own `lmcache server` (with an fs L2 tier and a registered fake engine, so
the L2 and checksum routes do real work). It reads `/schema/openapi.json` and, for every operation, draws
`--examples` valid requests and as many invalid ones (schemathesis' positive and negative generation:
wrong types, out-of-range numbers, missing and unknown fields, odd strings), sends each with a timeout and
counts the answers by status. A response >= 500 or a request without an answer within `--timeout` (a
hang) fails the run. `--token` (or LMCACHE_HTTP_AUTH_TOKEN) is sent as a bearer token.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Engine, ServerProcess


def fuzz_operation(
    op: Any, mode: GenerationMode, base_url: str, headers: dict[str, str], examples: int, timeout_s: float
) -> tuple[collections.Counter[int], list[str], list[str]]:
    """Send `examples` generated requests of one operation; (status counts, 5xx examples, hangs)."""
    statuses: collections.Counter[int] = collections.Counter()
    errors: list[str] = []
    hangs: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=["explicit", "generate"],
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        started = time.monotonic()
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=timeout_s)
        except Exception as exc:  # a timeout or a dropped connection: the request got no answer
            waited = time.monotonic() - started
            hangs.append(f"{case.method} {case.formatted_path} {type(exc).__name__} after {waited:.1f} s")
            return
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            body = case.body if not isinstance(case.body, bytes) else case.body[:100]
            sent = f"query={case.query} body={str(body)[:200]}"
            errors.append(f"{case.method} {case.formatted_path} {sent} -> {response.status_code}")

    with contextlib.suppress(Unsatisfiable):  # e.g. no invalid request of a route without parameters
        run()
    return statuses, errors, hangs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=200, help="valid and as many invalid requests per route"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before a request counts as a hang"
    )
    parser.add_argument("--url", help="fuzz a running server's HTTP frontend instead of starting one")
    parser.add_argument("--token", default=os.environ.get("LMCACHE_HTTP_AUTH_TOKEN"))
    args = parser.parse_args()
    server = engine = None
    if not args.url:
        l2 = json.dumps({"type": "fs", "base_path": tempfile.mkdtemp(prefix="lmcache-fuzz-l2-")})
        server = ServerProcess("--l2-adapter", l2, l1_gb=0.1).start()
        engine = Engine(server.zmq_url, 1000)
        engine.register()
        for seq in range(4):
            engine.store(seq)
    base_url = args.url or server.http_url  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    totals: collections.Counter[int] = collections.Counter()
    errors: list[str] = []
    hangs: list[str] = []
    started = time.monotonic()
    try:
        schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", headers=headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        for op in operations:
            per_op: collections.Counter[int] = collections.Counter()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                statuses, errs, hung = fuzz_operation(
                    op, mode, base_url, headers, args.examples, args.timeout
                )
                per_op.update(statuses)
                errors += errs
                hangs += hung
            totals.update(per_op)
            shown = " ".join(f"{code}:{n}" for code, n in sorted(per_op.items()))
            print(
                f"{op.method.upper():6} {op.path:28} {sum(per_op.values()):5} requests  {shown}", flush=True
            )
        alive = server is None or (server.alive() and server.healthy())
    finally:
        if engine is not None:
            engine.close()
        if server is not None:
            server.stop()
    total = sum(totals.values())
    server_errors = sum(n for code, n in totals.items() if code >= 500)
    print(
        f"http fuzz: {len(operations)} operations, {total} responses in {time.monotonic() - started:.0f} s, "
        f"{server_errors} >= 500, {len(hangs)} hangs; server alive afterwards: {alive}"
    )
    for line in (errors + hangs)[:10]:
        print("  ", line)
    ok = server_errors == 0 and not hangs and alive and total > 0
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
