"""vLLM end to end: time to first token of long prompts with and without KV connectors, in one run.

Run: .venv/bin/python benchmarks/vllm_e2e.py [--prompt-tokens 4096] [--prompts 3] [--format text|json]

Builds the vLLM virtualenv (`scripts/vllm-venv`, CPU build), writes a random-weight Llama large enough that
the CPU prefill of one prompt takes seconds (default 8 layers, hidden 1024, 16 heads of 64), and starts vLLM's
OpenAI server once per configuration:

- `none`: no connector (the baseline every ratio is against);
- `vllm-offload`: vLLM's own CPU offloading connector (`OffloadingConnector` with `cpu_bytes_to_use`);
  vLLM 0.32 refuses it on its CPU backend, and the row then says why;
- `vllm-prefix-cache`: vLLM's in-engine prefix cache, the upper bound of any reuse on one instance;
- `lmcache/<mode>`: our `LMCacheMPConnector` against `lmcache server`, per transfer mode (`lmcache_driven`,
  `engine_driven`);
- `none/again`: the baseline once more at the end, to show how much the (shared) machine drifted.

Each configuration sends every prompt twice: `cold` is the first request (nothing cached; our connector
stores), `warm` the identical second one (our connector retrieves). TTFT is the median over prompts of the
time from sending a streaming request to its first token. vLLM's own prefix caching is off except in
`vllm-prefix-cache`, so warm hits elsewhere come from the connector. Every output is compared with the
baseline's (greedy, so they must be identical). Every configuration gets the same CPU threads: vLLM would
otherwise reserve one more core when a connector is configured (see `VLLM_ENV` in the harness).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.e2e_vllm.harness

from tests.e2e_vllm.harness import (
    LMCacheServer,
    VllmServer,
    kv_transfer_config,
    make_model,
    vllm_python,
)

if TYPE_CHECKING:
    from collections.abc import Callable

VOCAB = 512


@dataclass
class Row:
    """One configuration and pass: its TTFTs and what the requests reported."""

    config: str
    phase: str
    ttft_s: list[float] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    same_output: bool = True
    error: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.ttft_s) if self.ttft_s else float("nan")


def prompts(count: int, tokens: int) -> list[list[int]]:
    """`count` distinct random token-id prompts (ids 0-2 are the tokenizer's specials)."""
    return [[random.Random(seed).randrange(3, VOCAB) for _ in range(tokens)] for seed in range(count)]


def first_error(log: str) -> str:
    """The root cause vLLM logged for a failed start (the worker's error, else the last '...Error:' line)."""
    worker = re.search(r"Worker failed with error '(.+?)', please", log)
    if worker:
        return worker.group(1)[:160]
    lines = [ln for ln in log.splitlines() if "Error:" in ln]
    return (lines[-1].split("] ")[-1] if lines else "vLLM did not start").strip()[:160]


def run_config(
    name: str,
    start: Callable[[Path], VllmServer],
    log: Path,
    ps: list[list[int]],
    reference: list[list[int]] | None,
    max_tokens: int,
) -> tuple[list[Row], list[list[int]]]:
    """Start vLLM with `start(log)`, send every prompt cold then warm; the two rows and the cold outputs."""
    cold, warm = Row(name, "cold"), Row(name, "warm")
    print(f"[{name}] starting vLLM", file=sys.stderr, flush=True)
    try:
        vllm = start(log)
    except (RuntimeError, TimeoutError):
        cold.error = warm.error = first_error(log.read_text(errors="replace"))
        print(f"[{name}] did not start: {cold.error}", file=sys.stderr, flush=True)
        return [cold, warm], []
    outputs: list[list[int]] = []
    try:
        for row in (cold, warm):
            for i, prompt in enumerate(ps):
                got = vllm.stream(prompt, max_tokens)
                row.ttft_s.append(got.ttft_s)
                row.cached_tokens.append(got.cached_tokens)
                if row is cold:
                    outputs.append(got.token_ids)
                want = reference[i] if reference is not None else outputs[i]
                row.same_output &= got.token_ids == want
                print(f"[{name}] {row.phase} prompt {i}: {got.ttft_s:.3f}s", file=sys.stderr, flush=True)
                time.sleep(1.0)  # let the connector's asynchronous store finish before the next request
    finally:
        vllm.stop()
    return [cold, warm], outputs


def render(rows: list[Row], baseline_s: float, tokens: int) -> str:
    head = (
        f"{'configuration':<22} {'pass':<5} {'TTFT median s':>13} {'vs none':>8} {'hit tokens':>11}  output"
    )
    lines = [f"vLLM CPU, {tokens}-token prompts, time to first token", head, "-" * len(head)]
    for r in rows:
        if r.error:
            lines.append(f"{r.config:<22} {r.phase:<5} {'n/a':>13} {'':>8} {'':>11}  {r.error}")
            continue
        hits = statistics.median(r.cached_tokens) if r.cached_tokens else 0
        same = "same as none" if r.same_output else "DIFFERS from none"
        ratio = r.median_s / baseline_s
        lines.append(f"{r.config:<22} {r.phase:<5} {r.median_s:>13.3f} {ratio:>7.2f}x {hits:>11.0f}  {same}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--prompt-tokens", type=int, default=4096)
    add("--prompts", type=int, default=3, help="distinct prompts per configuration")
    add("--max-tokens", type=int, default=4)
    add("--hidden", type=int, default=1024)
    add("--layers", type=int, default=8)
    add("--heads", type=int, default=16)
    add("--l1-size-gb", type=float, default=2.0)
    add(
        "--modes",
        nargs="+",
        default=["lmcache_driven", "engine_driven"],
        choices=["lmcache_driven", "engine_driven"],
    )
    add("--skip", nargs="*", default=[], choices=["vllm-offload", "vllm-prefix-cache"])
    add("--no-drift-check", action="store_true", help="skip the second baseline run at the end")
    add("--workdir", type=Path, help="where the model and logs go (default: a temporary directory)")
    add("--format", choices=("text", "json"), default="text")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vllm_e2e_bench_"))
    print(f"workdir {workdir}", file=sys.stderr)
    python = vllm_python()
    model = workdir / "model"
    if not (model / "config.json").exists():
        make_model(python, model, hidden=args.hidden, layers=args.layers, heads=args.heads, vocab=VOCAB)
    ps = prompts(args.prompts, args.prompt_tokens)
    max_len = args.prompt_tokens + args.max_tokens + 64

    def vllm(**kw: Any) -> Callable[[Path], VllmServer]:
        return lambda log: VllmServer.start(python, model, log, max_model_len=max_len, **kw)

    def run(name: str, start: Callable[[Path], VllmServer]) -> list[Row]:
        log = workdir / f"vllm-{name.replace('/', '-')}.log"
        return run_config(name, start, log, ps, reference, args.max_tokens)[0]

    reference: list[list[int]] | None = None
    rows, reference = run_config("none", vllm(), workdir / "vllm-none.log", ps, None, args.max_tokens)
    if not reference:
        raise SystemExit(f"the baseline vLLM did not start: {rows[0].error}")
    if "vllm-offload" not in args.skip:
        offload = {
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"cpu_bytes_to_use": int(args.l1_size_gb * (1 << 30))},
        }
        rows += run("vllm-offload", vllm(kv_transfer=offload))
    if "vllm-prefix-cache" not in args.skip:
        rows += run("vllm-prefix-cache", vllm(extra_args=["--enable-prefix-caching"]))
    for mode in args.modes:
        server = LMCacheServer(workdir / f"lmcache-{mode}", l1_size_gb=args.l1_size_gb)
        server.start()
        try:
            rows += run(
                f"lmcache/{mode}", vllm(kv_transfer=kv_transfer_config(server, mp_transfer_mode=mode))
            )
        finally:
            server.stop()
    if not args.no_drift_check:
        rows += run("none/again", vllm())  # the baseline once more: how much the machine drifted meanwhile

    baseline_s = rows[0].median_s
    if args.format == "json":
        print(
            json.dumps(
                [{**asdict(r), "median_s": r.median_s, "vs_none": r.median_s / baseline_s} for r in rows]
            )
        )
    else:
        print(render(rows, baseline_s, args.prompt_tokens))


if __name__ == "__main__":
    main()
