"""Prometheus counters and histograms fed by storage events (a subscriber of the event bus).

Names follow Prometheus conventions: `lmcache_mp_` prefix, base units (bytes, seconds), `_total` on
counters (prometheus_client appends it). Labels are bounded sets only: eviction reason, L2 adapter (its
cascade position and type), lookup tier; never a cache_salt, key or request id. Counters count every
event; the store/retrieve latency and size histograms record a `sample_rate` share of requests.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from lmcache.domain.events import (
    AllocationFailed,
    EvictionReason,
    L1Read,
    L1Removed,
    L1WriteAborted,
    L1WriteCommitted,
    L2Loaded,
    L2Stored,
    L2StoreDropped,
    LookupPerformed,
    PrefetchCompleted,
    TransferCompleted,
    TransferKind,
    WorkerReaped,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from prometheus_client import CollectorRegistry

    from lmcache.domain.events import StorageEvent

__all__ = ("EventMetrics",)

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
_SIZE_BUCKETS = tuple(float(1 << n) for n in range(16, 33, 2))  # 64 KiB .. 4 GiB


class _TransferMetrics:
    """The counters and histograms of one transfer direction (store or retrieve)."""

    def __init__(self, op: str, registry: CollectorRegistry) -> None:
        prefix = f"lmcache_mp_{op}"
        self.requests = Counter(f"{prefix}_requests", f"{op} requests handled.", registry=registry)
        self.failures = Counter(f"{prefix}_failures", f"{op} requests refused or failed.", registry=registry)
        self.tokens = Counter(f"{prefix}_tokens", f"Tokens copied by {op} requests.", registry=registry)
        self.bytes = Counter(f"{prefix}_bytes", f"Bytes copied by {op} requests.", registry=registry)
        self.duration = Histogram(
            f"{prefix}_duration_seconds",
            f"Time the server spent on a {op} request (sampled by --metrics-sample-rate).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.size = Histogram(
            f"{prefix}_size_bytes",
            f"Bytes copied by one {op} request (sampled by --metrics-sample-rate).",
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )


class EventMetrics:
    """Turns storage events into Prometheus samples on `registry`.

    Args:
        registry: The server's own registry.
        sample_rate: Share of store/retrieve requests recorded in the histograms (`--metrics-sample-rate`).
        chunk_size: Tokens per chunk (`--chunk-size`), to turn prefix hits into tokens.
        adapter_types: The `"type"` of each L2 adapter, in cascade order (label values).
        rng: Random source of the sampling (tests pass a seeded one).
    """

    name = "metrics"
    kinds: tuple[type, ...] = ()

    def __init__(
        self,
        registry: CollectorRegistry,
        sample_rate: float,
        chunk_size: int,
        adapter_types: Sequence[str] = (),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sample_rate = sample_rate
        self.chunk_size = chunk_size
        self._rng = rng
        self._adapter_labels = [(str(i), t) for i, t in enumerate(adapter_types)]
        self._l1(registry)
        self._l2(registry)
        self._lookups(registry)
        self.transfers = {kind: _TransferMetrics(kind.value, registry) for kind in TransferKind}
        self.workers_reaped = Counter(
            "lmcache_mp_workers_reaped", "Silent workers dropped by the reaper.", registry=registry
        )
        self._handlers: dict[type, Callable[[Any], None]] = {
            L1WriteCommitted: self._on_committed,
            L1WriteAborted: self._on_aborted,
            L1Read: self._on_read,
            L1Removed: self._on_removed,
            AllocationFailed: self._on_allocation_failed,
            L2Stored: self._on_l2_stored,
            L2Loaded: self._on_l2_loaded,
            L2StoreDropped: lambda e: self.l2_store_dropped.inc(e.count),
            PrefetchCompleted: self._on_prefetch,
            LookupPerformed: self._on_lookup,
            TransferCompleted: self._on_transfer,
            WorkerReaped: lambda e: self.workers_reaped.inc(),
        }

    def _l1(self, registry: CollectorRegistry) -> None:
        self.l1_writes = Counter("lmcache_mp_l1_writes", "Objects committed to L1.", registry=registry)
        self.l1_write_bytes = Counter(
            "lmcache_mp_l1_write_bytes", "Bytes of objects committed to L1.", registry=registry
        )
        self.l1_write_aborts = Counter(
            "lmcache_mp_l1_write_aborts",
            "L1 write reservations dropped before commit (reason: aborted or expired).",
            ["reason"],
            registry=registry,
        )
        self.l1_reads = Counter(
            "lmcache_mp_l1_reads", "Objects asked for by L1 read locks.", registry=registry
        )
        self.l1_read_hits = Counter(
            "lmcache_mp_l1_read_hits",
            "Objects present when an L1 read lock was asked for.",
            registry=registry,
        )
        self.l1_evictions = Counter(
            "lmcache_mp_l1_evictions", "Objects that left L1, by reason.", ["reason"], registry=registry
        )
        self.l1_evicted_bytes = Counter(
            "lmcache_mp_l1_evicted_bytes", "Bytes that left L1, by reason.", ["reason"], registry=registry
        )
        self.l1_allocation_failures = Counter(
            "lmcache_mp_l1_allocation_failures",
            "Objects that found no room in L1 even after on-demand eviction.",
            registry=registry,
        )
        for reason in EvictionReason:
            self.l1_evictions.labels(reason.value)
            self.l1_evicted_bytes.labels(reason.value)
        for cause in ("aborted", "expired"):
            self.l1_write_aborts.labels(cause)

    def _l2(self, registry: CollectorRegistry) -> None:
        labels = ["adapter", "type"]
        self.l2_stored = Counter(
            "lmcache_mp_l2_stored_objects", "Objects stored to an L2 adapter.", labels, registry=registry
        )
        self.l2_store_failures = Counter(
            "lmcache_mp_l2_store_failures",
            "Objects an L2 adapter failed to store.",
            labels,
            registry=registry,
        )
        self.l2_stored_bytes = Counter(
            "lmcache_mp_l2_stored_bytes", "Bytes stored to an L2 adapter.", labels, registry=registry
        )
        self.l2_loaded = Counter(
            "lmcache_mp_l2_loaded_objects",
            "Objects loaded from an L2 adapter into L1.",
            labels,
            registry=registry,
        )
        self.l2_load_failures = Counter(
            "lmcache_mp_l2_load_failures", "Failed loads from an L2 adapter.", labels, registry=registry
        )
        self.l2_loaded_bytes = Counter(
            "lmcache_mp_l2_loaded_bytes",
            "Bytes loaded from an L2 adapter into L1.",
            labels,
            registry=registry,
        )
        self.l2_store_dropped = Counter(
            "lmcache_mp_l2_store_dropped_objects",
            "Objects not stored to L2 because the store queue was full.",
            registry=registry,
        )
        for counter in (
            self.l2_stored,
            self.l2_store_failures,
            self.l2_stored_bytes,
            self.l2_loaded,
            self.l2_load_failures,
            self.l2_loaded_bytes,
        ):
            for label in self._adapter_labels:
                counter.labels(*label)

    def _lookups(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter("lmcache_mp_lookup_requests", "Lookups accepted.", registry=registry)
        self.lookup_requested_tokens = Counter(
            "lmcache_mp_lookup_requested_tokens", "Tokens covered by lookups.", registry=registry
        )
        self.lookup_hit_tokens = Counter(
            "lmcache_mp_lookup_hit_tokens",
            "Tokens of lookup prefix hits, by the tier the objects came from (l1, l2).",
            ["tier"],
            registry=registry,
        )
        self.prefetch_l2_errors = Counter(
            "lmcache_mp_prefetch_l2_errors",
            "L2 lookups or loads of prefetches that failed or missed their deadline.",
            registry=registry,
        )
        for tier in ("l1", "l2"):
            self.lookup_hit_tokens.labels(tier)

    # --------------------------------------------------------------- handling
    def handle(self, event: StorageEvent, at: float) -> None:
        """Count one event."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def close(self) -> None:
        """Nothing to release: the registry outlives the bus."""

    def _on_committed(self, e: L1WriteCommitted) -> None:
        self.l1_writes.inc(len(e.keys))
        self.l1_write_bytes.inc(e.nbytes)

    def _on_aborted(self, e: L1WriteAborted) -> None:
        self.l1_write_aborts.labels("expired" if e.expired else "aborted").inc(len(e.keys))

    def _on_read(self, e: L1Read) -> None:
        self.l1_reads.inc(e.requested)
        self.l1_read_hits.inc(e.hits)

    def _on_removed(self, e: L1Removed) -> None:
        self.l1_evictions.labels(e.reason.value).inc(len(e.keys))
        self.l1_evicted_bytes.labels(e.reason.value).inc(e.nbytes)

    def _on_allocation_failed(self, e: AllocationFailed) -> None:
        self.l1_allocation_failures.inc()

    def _adapter(self, index: int) -> tuple[str, str]:
        if 0 <= index < len(self._adapter_labels):
            return self._adapter_labels[index]
        return (str(index), "unknown")

    def _on_l2_stored(self, e: L2Stored) -> None:
        label = self._adapter(e.adapter_index)
        self.l2_stored.labels(*label).inc(e.succeeded)
        self.l2_store_failures.labels(*label).inc(e.failed)
        self.l2_stored_bytes.labels(*label).inc(e.nbytes)

    def _on_l2_loaded(self, e: L2Loaded) -> None:
        label = self._adapter(e.adapter_index)
        if e.ok:
            self.l2_loaded.labels(*label).inc()
            self.l2_loaded_bytes.labels(*label).inc(e.nbytes)
        else:
            self.l2_load_failures.labels(*label).inc()

    def _on_lookup(self, e: LookupPerformed) -> None:
        self.lookups.inc()
        self.lookup_requested_tokens.inc(e.seq_len)

    def _on_prefetch(self, e: PrefetchCompleted) -> None:
        # Hits are counted per object (rows x chunks); tokens are per chunk, so split the prefix's
        # tokens between the tiers in proportion to where its objects came from.
        objects = e.l1_hits + e.l2_hits
        self.prefetch_l2_errors.inc(e.l2_errors)
        if objects and e.prefix_chunks:
            tokens = e.prefix_chunks * self.chunk_size
            from_l1 = round(tokens * e.l1_hits / objects)
            self.lookup_hit_tokens.labels("l1").inc(from_l1)
            self.lookup_hit_tokens.labels("l2").inc(tokens - from_l1)

    def _on_transfer(self, e: TransferCompleted) -> None:
        m = self.transfers[e.kind]
        m.requests.inc()
        if not e.ok:
            m.failures.inc()
        m.tokens.inc(e.tokens)
        m.bytes.inc(e.nbytes)
        if self.sample_rate > 0 and self._rng() < self.sample_rate:
            m.duration.observe(e.duration_s)
            m.size.observe(e.nbytes)
