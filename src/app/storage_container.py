"""Composition root, first part: the storage side of `lmcache server` (L1, L2, sessions, controllers).

The `CacheEngine` over these parts is built in `container.py`, beside CacheBlend, whose registrar it is
given at construction as its store listener.

The L2 cascade and its wrappers are `l2_container.py`'s sub-container (`l2`). `TelemetryContainer`
(`telemetry_container.py`) extends this with the telemetry, and `ServerContainer` (`container.py`) that
with the serving side (CacheBlend, the ZMQ transport, the HTTP frontend); the split keeps each module
readable, and together they are the composition root: the only modules naming the concrete classes of
the graph and deciding which implementation runs.

`--trace-level storage` is decided here too: `l1`, `eviction_loop`, `prefetch_controller`,
`store_controller` and `quotas` are Selectors between the plain domain class and its traced subclass
(`domain/trace_hooks.py`), both built from one argument list (`_plain_or_traced`), so a new constructor
argument reaches both and tracing off costs nothing.
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers

from lmcache.adapters.coordinator.client import CoordinatorClient
from lmcache.adapters.coordinator.event_forwarder import CoordinatorEventForwarder
from lmcache.adapters.memory.anonymous import AnonymousL1Memory
from lmcache.adapters.memory.devdax import DevdaxL1Memory
from lmcache.adapters.memory.gds import GdsL1Memory
from lmcache.adapters.memory.shm import ShmL1Memory
from lmcache.adapters.system_clock import SystemClock
from lmcache.adapters.telemetry.event_bus import EventBus
from lmcache.adapters.trace.recorder import LctTraceRecorder
from lmcache.adapters.transfer.cpu_registration import CpuRegistrar
from lmcache.app.config import ServerConfig
from lmcache.app.fleet_membership import client_metadata
from lmcache.app.l1_medium import l1_medium
from lmcache.app.l2_container import L2Container, kv_dtype_resolver
from lmcache.app.storage_loop import StorageLoop
from lmcache.app.telemetry import wants_bus
from lmcache.app.trace_wiring import first_trace_path, storage_config_json, trace_level_meta
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.digest_cache import DigestCache
from lmcache.domain.event_fanout import FanoutEventSink
from lmcache.domain.eviction import IsolatedLruPolicy, LruPolicy, NoopPolicy
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.hashing import TokenHasher
from lmcache.domain.kv_events import KVEventLog
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController
from lmcache.domain.quotas import QuotaTable
from lmcache.domain.sessions import SessionManager
from lmcache.domain.store_controller import StoreController
from lmcache.domain.supervisor import Supervisor
from lmcache.domain.trace_hooks import (
    TracedEvictionLoop,
    TracedL1Manager,
    TracedPrefetchController,
    TracedQuotaTable,
    TracedStoreController,
)
from lmcache.domain.transfer_modes import serves_engine_driven
from lmcache.domain.units import gb_to_bytes
from lmcache.domain.workers import WorkerRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from lmcache.ports.events import EventSink
    from lmcache.ports.l1_memory import L1Memory

__all__ = ("StorageContainer", "l1_eviction_policy")


def _event_log_size(size: int, observability_off: bool) -> int:
    return 0 if observability_off else size


def _arena_source(memory: L1Memory) -> Callable[[], torch.Tensor]:
    """The arena tensor on demand: made at an engine's registration, after torch loads (lazy_torch.py)."""
    return functools.partial(getattr, memory, "tensor")


def _on_off(value: object) -> str:
    """A Selector's key: "off" for None or False, else "on"."""
    return "off" if value is None or value is False else "on"


def _reports_events(client: CoordinatorClient | None) -> str:
    return _on_off(client is not None and client.events is not None)


def _event_sinks(*sinks: EventSink | None) -> list[EventSink]:
    """Where the domain's events go, in order: the KV-event log synchronously, the bus, the coordinator."""
    return [sink for sink in sinks if sink is not None]


def _plain_or_traced(
    tracing: providers.Provider[str],
    recorder: providers.Provider[Any],
    plain: type,
    traced: type,
    *args: Any,
    **kwargs: Any,
) -> providers.Selector[Any]:
    """`plain(*args, **kwargs)`, or `traced(*args, tracer=recorder, **kwargs)` under --trace-level."""
    return providers.Selector(
        tracing,
        off=providers.Singleton(plain, *args, **kwargs),
        on=providers.Singleton(traced, *args, tracer=recorder, **kwargs),
    )


def l1_eviction_policy(
    name: providers.Provider[Any], quotas: providers.Provider[Any]
) -> providers.Selector[Any]:
    """L1's eviction policy, chosen by `--eviction-policy` (also the replay engine's, replay_container.py)."""
    return providers.Selector(
        name,
        LRU=providers.Singleton(LruPolicy),
        IsolatedLRU=providers.Singleton(IsolatedLruPolicy, quotas),
        noop=providers.Singleton(NoopPolicy),
    )


class StorageContainer(containers.DeclarativeContainer):
    """The storage engine's object graph (module docstring)."""

    config = providers.Dependency(instance_of=ServerConfig)
    clock = providers.Singleton(SystemClock)
    obs = config.provided.observability
    tracing = providers.Callable(_on_off, obs.trace_level)
    trace_recorder = providers.Selector(  # None without --trace-level; started by the runtime
        tracing,
        on=providers.Singleton(
            LctTraceRecorder,
            providers.Callable(first_trace_path, obs.trace_output),
            config_json=providers.Callable(storage_config_json, config),
            level_meta=providers.Callable(trace_level_meta, config),
            level=obs.trace_level,
            queue_size=obs.trace_queue_size,
            rotate_bytes=obs.trace_rotation_max_size,
        ),
        off=providers.Object(None),
    )
    kv_events = providers.Singleton(
        KVEventLog,
        capacity=providers.Callable(
            _event_log_size,
            config.provided.mp.kv_event_log_size,
            config.provided.observability.disable_observability,
        ),
        incarnation=providers.Callable(time.time_ns),
        max_bytes=config.provided.mp.kv_event_log_max_bytes,
    )
    event_bus = providers.Selector(  # no bus when no subscriber would listen (telemetry.wants_bus)
        providers.Callable(_on_off, providers.Callable(wants_bus, obs)),
        on=providers.Singleton(EventBus, obs.event_bus_queue_size),
        off=providers.Object(None),
    )
    fleet = config.provided.coordinator
    coordinator_client = providers.Selector(  # only with --coordinator-url; started by the runtime
        providers.Callable(_on_off, fleet.coordinator_url),
        on=providers.Singleton(
            CoordinatorClient,
            fleet.coordinator_url,
            config.provided.mp.instance_id,
            config.provided.http.http_port,  # the coordinator calls this port back
            advertise_ip=fleet.coordinator_advertise_ip,
            heartbeat_interval_s=fleet.coordinator_heartbeat_interval,
            l2_event_reporting=fleet.coordinator_l2_event_reporting,
            l2_event_flush_interval_s=fleet.coordinator_l2_event_flush_interval,
            metadata=providers.Callable(client_metadata, config.provided.mp.port),
        ),
        off=providers.Object(None),
    )
    coordinator_forwarder = providers.Selector(  # --coordinator-l2-event-reporting: a synchronous sink
        providers.Callable(_reports_events, coordinator_client),
        on=providers.Singleton(CoordinatorEventForwarder, coordinator_client.provided.events),
        off=providers.Object(None),
    )
    events = providers.Singleton(
        FanoutEventSink, providers.Callable(_event_sinks, kv_events, event_bus, coordinator_forwarder)
    )
    quotas = _plain_or_traced(tracing, trace_recorder, QuotaTable, TracedQuotaTable)
    eviction_policy = l1_eviction_policy(config.provided.l1.eviction_policy, quotas)
    arena = providers.Singleton(
        ArenaAllocator,
        total_bytes=providers.Callable(gb_to_bytes, config.provided.l1.l1_size_gb),
        align_bytes=config.provided.l1.l1_align_bytes,
    )
    l1 = _plain_or_traced(
        tracing,
        trace_recorder,
        L1Manager,
        TracedL1Manager,
        arena,
        eviction_policy,
        clock,
        events,
        write_ttl_s=config.provided.l1.l1_write_ttl_seconds,
        read_ttl_s=config.provided.l1.l1_read_ttl_seconds,
    )
    eviction_loop = _plain_or_traced(
        tracing,
        trace_recorder,
        EvictionLoop,
        TracedEvictionLoop,
        l1,
        trigger_watermark=config.provided.l1.eviction_trigger_watermark,
        eviction_ratio=config.provided.l1.eviction_ratio,
    )
    hasher = providers.Singleton(
        TokenHasher,
        chunk_size=config.provided.mp.chunk_size,
        algorithm=config.provided.mp.hash_algorithm,
        hash_seed=providers.Callable(os.environ.get, "PYTHONHASHSEED"),  # LMCache's seed source
    )
    digest_cache = providers.Singleton(DigestCache)
    sessions = providers.Singleton(
        SessionManager, l1, hasher, clock, ttl_s=config.provided.mp.session_ttl_seconds, digests=digest_cache
    )
    workers = providers.Singleton(
        WorkerRegistry,
        clock,
        reap_timeout_s=config.provided.mp.worker_reap_timeout_seconds,
        grace_s=config.provided.mp.worker_registration_grace_seconds,
    )
    l1_bytes = providers.Callable(gb_to_bytes, config.provided.l1.l1_size_gb)
    engine_driven_mode = providers.Callable(serves_engine_driven, config.provided.mp.supported_transfer_mode)
    # Decided once (a Singleton key): /dev/shm's room shrinks once the pool exists.
    l1_medium_kind = providers.Singleton(
        l1_medium,
        l1_bytes,
        devdax_path=config.provided.l1.l1_devdax_path,
        shm_name=config.provided.mp.shm_name,
        want_shm_pool=engine_driven_mode,
        gds_path=config.provided.l1.gds_l1_path,
    )
    l1_memory = providers.Selector(  # the medium the L1 flags ask for; L1MemoryError when it is unusable
        l1_medium_kind,
        gds=providers.Singleton(GdsL1Memory, config.provided.l1.gds_l1_path, l1_bytes),
        devdax=providers.Singleton(DevdaxL1Memory, config.provided.l1.l1_devdax_path, l1_bytes),
        shm=providers.Singleton(ShmL1Memory, l1_bytes, config.provided.mp.shm_name),
        anonymous=providers.Singleton(
            AnonymousL1Memory,
            l1_bytes,
            use_lazy=config.provided.l1.l1_use_lazy,
            init_size_bytes=providers.Callable(gb_to_bytes, config.provided.l1.l1_init_size_gb),
        ),
    )
    l2 = providers.Container(  # the cascade and its wrappers (l2_container.py)
        L2Container,
        specs=config.provided.l2.l2_adapter,
        quotas=quotas,  # per-adapter IsolatedLRU eviction reads the same quota table as L1
        events=events,
        dtype_of=providers.Callable(kv_dtype_resolver, workers),
    )
    l2_adapters = l2.adapters
    store_controller = _plain_or_traced(
        tracing,
        trace_recorder,
        StoreController,
        TracedStoreController,
        l1,
        l1_memory,
        l2_adapters,
        policy=config.provided.l2.l2_store_policy,
        events=events,
    )
    prefetch_controller = _plain_or_traced(
        tracing,
        trace_recorder,
        PrefetchController,
        TracedPrefetchController,
        l1,
        l1_memory,
        l2_adapters,
        policy=config.provided.l2.l2_prefetch_policy,
        max_in_flight=config.provided.l2.l2_prefetch_max_in_flight,
        events=events,
    )
    supervisor = providers.Singleton(Supervisor, clock)
    storage_loop = providers.Singleton(StorageLoop)
    arena_source = providers.Callable(_arena_source, l1_memory)
    registrar = providers.Singleton(
        CpuRegistrar,
        workers,
        arena_source,
        config.provided.mp.chunk_size,
        ensure_backed=l1_memory.provided.ensure_backed,
        is_backed=l1_memory.provided.is_backed,
        copying=l1_memory.provided.copying,
        copy_threads=config.provided.mp.kv_copy_threads,
        copy_pin=config.provided.mp.kv_copy_pin,
    )
