"""What the HTTP frontend is built from: the running server's services, handed over by the runtime.

The frontend is an adapter, so it never imports the app layer: the runtime (the composition root's user)
collects the domain services, a redacted view of the configuration and a few callables into one
`HttpServices`, and the route handlers read it through the `services` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lmcache.domain.null_events import NullEventSink

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from concurrent.futures import Future

    from lmcache.domain.cache_engine import CacheEngine
    from lmcache.domain.eviction_loop import EvictionLoop
    from lmcache.domain.hashing import TokenHasher
    from lmcache.domain.quotas import QuotaTable
    from lmcache.domain.supervisor import Supervisor
    from lmcache.ports.events import EventSink
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("HttpServices", "HttpSettings", "L1MemoryInfo", "MetricsSource")


class MetricsSource(Protocol):
    """The server's metrics registry as `/metrics` serves it (built by the telemetry adapter)."""

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type (Prometheus text format)."""
        ...


class L1MemoryInfo(Protocol):
    """What `/status` reports of the L1 medium (the memory adapters have it)."""

    @property
    def kind(self) -> str:
        """`anonymous`, `shm`, `devdax` or `gds`."""
        ...

    @property
    def populated_bytes(self) -> int | None:
        """Bytes backed ahead of use from the arena's start; None when the medium is not populated."""
        ...


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The configuration values the routes report or obey.

    Every field but `run_script_timeout_s` is the server config field of the same name (`--instance-id`,
    `--chunk-size`, `--hash-algorithm`, `--eviction-policy`, `--supported-transfer-mode`,
    `--enable-run-script`, `--script-allowed-imports`): its default, bounds and help live on the config
    model only, and the composition root copies the values over by name (`app/plain_settings.py`).
    """

    instance_id: str
    chunk_size: int
    hash_algorithm: str
    eviction_policy: str
    supported_transfer_mode: str
    enable_run_script: bool
    script_allowed_imports: tuple[str, ...]
    run_script_timeout_s: float = 10.0  # how long a posted script may run; not a flag


class HttpServices:
    """Everything the routes touch (a plain class: Litestar must not introspect it as a data model).

    Args:
        settings: Configuration values (see `HttpSettings`).
        engine: The cache engine (L1, sessions, workers, prefetch and store controllers).
        quotas: Per-salt quotas.
        supervisor: The background loops' health.
        eviction: The eviction loop (watermark and ratio).
        hasher: The chunk hasher (coordinator prefetches hash their tokens).
        l2_adapters: The L2 cascade, in order.
        l2_types: The `"type"` of each adapter's `--l2-adapter` spec, same order.
        run_storage: Runs a coroutine on the storage event loop (every L2 call must run there).
        engine_problem: None while the engine serves, else why it does not (shown by /healthcheck).
        config: The effective configuration, secrets redacted (`GET /config`).
        version: The package version.
        metrics: The metrics registry; None when metrics are off (then `/metrics` answers 503).
        started_at: Wall-clock start time (seconds since the epoch), for `/`.
        events: Where the routes publish the storage events they cause (L2 deletes: the coordinator's
            event reporter and telemetry listen there); None drops them.
        l1_memory: The L1 arena's medium (`kind`, `populated_bytes`), reported by `/status`.
        status_extras: More top-level `/status` fields (CacheBlend's), read per request; None adds none.
    """

    def __init__(
        self,
        *,
        settings: HttpSettings,
        engine: CacheEngine,
        quotas: QuotaTable,
        supervisor: Supervisor,
        eviction: EvictionLoop,
        hasher: TokenHasher,
        l2_adapters: Sequence[L2Adapter],
        l2_types: Sequence[str],
        run_storage: Callable[[Coroutine[Any, Any, Any]], Future[Any]],
        engine_problem: Callable[[], str | None],
        config: Mapping[str, Any] | None = None,
        version: str = "",
        metrics: MetricsSource | None = None,
        started_at: float = 0.0,
        events: EventSink | None = None,
        l1_memory: L1MemoryInfo | None = None,
        status_extras: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        if len(l2_types) != len(l2_adapters):
            raise ValueError("l2_types must name every L2 adapter")
        self.settings = settings
        self.engine = engine
        self.quotas = quotas
        self.supervisor = supervisor
        self.eviction = eviction
        self.hasher = hasher
        self.l2_adapters = tuple(l2_adapters)
        self.l2_types = tuple(l2_types)
        self.run_storage = run_storage
        self.engine_problem = engine_problem
        self.config = dict(config or {})
        self.version = version
        self.metrics = metrics
        self.started_at = started_at
        self.events: EventSink = events if events is not None else NullEventSink()
        self.l1_memory = l1_memory
        self.status_extras = status_extras
