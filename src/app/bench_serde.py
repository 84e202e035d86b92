"""`lmcache bench l2 --serde JSON`: one adapter without serde and with each serde given, in the same run.

Every configuration stores and loads the same objects (random bytes, or KV of the e2e model with
`--data kv`, bench_kv.py); rounds alternate the configurations (a disk or a shared machine drifts), and a
configuration's ratio is the median over rounds of its MB/s over the no-serde MB/s of the same round.
MB/s count the KV bytes moved (before serde). `stored` is the bytes the tier holds over the KV bytes (what
zstd saves, fp8 halves); lossless chains are verified byte for byte, chains with fp8 report their
largest and mean error relative to max(|x|, 1e-3).
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lmcache.app.bench_l2 import OpStats, _call, run_phase
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_container import l2_adapters
from lmcache.domain.keys import ObjectKey, pack_kv_rank

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("SerdeRow", "compare_serdes", "label_of", "print_rows")


@dataclass
class SerdeRow:
    """One configuration's numbers over the rounds."""

    name: str
    lossy: bool
    store: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    stored: list[float] = field(default_factory=list)
    max_error: float = 0.0
    errors: list[float] = field(default_factory=list)
    failures: int = 0


def label_of(serde: Any) -> str:
    """A short name of a serde spec (`zstd`, `fp8+aesgcm`)."""
    stages = serde if isinstance(serde, list) else [serde]
    return "+".join(str(s.get("type", "?")) for s in stages)


def _lossy(serde: Any) -> bool:
    stages = serde if isinstance(serde, list) else [serde]
    return any(s.get("type") == "fp8" for s in stages)


def _mbps(stats: OpStats) -> float:
    return stats.nbytes / stats.wall_s / 1e6 if stats.wall_s else 0.0


async def _round(adapter: Any, row: SerdeRow, data: Sequence[memoryview], in_flight: int, dtype: str) -> None:
    size = data[0].nbytes
    run = uuid.uuid4().bytes
    keys = [ObjectKey(run + i.to_bytes(16, "big"), "bench", pack_kv_rank(1, 0)) for i in range(len(data))]
    before = (await adapter.usage()).used_bytes
    store, load = OpStats(), OpStats()
    await run_phase(
        [_call(adapter.store, k, d) for k, d in zip(keys, data, strict=True)], in_flight, size, store
    )
    row.stored.append(((await adapter.usage()).used_bytes - before) / (size * len(data)))
    outs = [memoryview(bytearray(size)) for _ in data]
    loaded: dict[int, bool] = {}
    await run_phase(
        [_call(adapter.load, k, outs[i], loaded, i) for i, k in enumerate(keys)], in_flight, size, load
    )
    row.store.append(_mbps(store))
    row.load.append(_mbps(load))
    row.failures += store.failures + load.failures
    for i, d in enumerate(data):
        if not loaded.get(i):
            continue
        if not row.lossy:
            if bytes(outs[i]) != bytes(d):
                raise AssertionError(f"{row.name}: a loaded object differs from what was stored")
            continue
        x = torch.frombuffer(bytearray(d), dtype=getattr(torch, dtype)).float()
        y = torch.frombuffer(outs[i], dtype=getattr(torch, dtype)).float()
        rel = (y - x).abs() / x.abs().clamp(min=1e-3)
        row.max_error = max(row.max_error, float(rel.max()))
        row.errors.append(float(rel.mean()))
    await adapter.delete(keys)


async def compare_serdes(
    spec: dict[str, Any],
    serdes: Sequence[Any],
    data: Sequence[memoryview],
    *,
    rounds: int = 3,
    in_flight: int = 4,
    dtype: str = "bfloat16",
    between: Callable[[], None] | None = None,
) -> list[SerdeRow]:
    """Measure `spec` without serde and with each of `serdes`; returns one row each, no-serde first.

    Args:
        spec: The adapter's `--l2-adapter` JSON (its own `"serde"`, if any, is replaced).
        serdes: The serde JSONs to compare.
        data: The objects every round stores and loads.
        rounds: Rounds per configuration (alternating order).
        in_flight: Concurrent operations.
        dtype: Element type of `data` (fp8's source dtype, and how its error is measured).
        between: Called between configurations (the fs benchmark drops page caches there).
    """
    torch.set_num_threads(1)  # as the server runs (runtime.py): the serde pool is the parallelism
    configs: list[tuple[SerdeRow, dict[str, Any]]] = [(SerdeRow("none", False), {**spec, "serde": None})]
    configs += [(SerdeRow(label_of(s), _lossy(s)), {**spec, "serde": s}) for s in serdes]
    adapters = []
    for _, conf in configs:
        parsed = L2Config.model_validate({"l2_adapter": [{k: v for k, v in conf.items() if v is not None}]})
        adapters += l2_adapters(parsed.l2_adapter, dtype_of=lambda _key: dtype)
    try:
        for r in range(rounds):
            order = list(range(len(configs)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for i in order:
                if between is not None:
                    between()
                await _round(adapters[i], configs[i][0], data, in_flight, dtype)
    finally:
        for adapter in adapters:
            await adapter.close()
    return [row for row, _ in configs]


def _ratio(row: SerdeRow, base: SerdeRow, op: str) -> float:
    ours: list[float] = getattr(row, op)
    theirs: list[float] = getattr(base, op)
    return statistics.median(o / b for o, b in zip(ours, theirs, strict=True) if b)


def print_rows(rows: Sequence[SerdeRow], title: str) -> None:
    """The table: MB/s (medians), ratios to no serde (medians of per-round ratios), stored share, error."""
    base = rows[0]
    print(f"| {title} serde | store MB/s | load MB/s | store x | load x | stored/KV | max err | mean err |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        err = (
            f"{row.max_error:.4f} | {statistics.mean(row.errors):.4f}"
            if row.lossy and row.errors
            else "exact | -"
        )
        print(
            f"| {row.name} | {statistics.median(row.store):.1f} | {statistics.median(row.load):.1f} | "
            f"{_ratio(row, base, 'store'):.2f}x | {_ratio(row, base, 'load'):.2f}x | "
            f"{statistics.median(row.stored):.3f} | {err} |"
            + (f" {row.failures} failures" if row.failures else "")
        )
