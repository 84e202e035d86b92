"""Composition root: the only module that names concrete classes.

`lmcache server` and `lmcache coordinator` build their container from one validated config; tests swap
providers with `override()` instead of patching modules. Nothing is allocated or started at construction:
providers are resolved on demand, and the runtime (the serving issue) starts the loops.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from lmcache.adapters.system_clock import SystemClock
from lmcache.adapters.transfer.cpu_registration import CpuRegistrar
from lmcache.app.blend_wiring import build_blend
from lmcache.app.config import ServerConfig
from lmcache.app.fleet_membership import build_coordinator_client, with_coordinator_sink
from lmcache.app.l1_medium import open_l1_memory
from lmcache.app.l2_factory import build_l2_adapters, spec_type
from lmcache.app.l2_wrappers import kv_dtype_resolver
from lmcache.app.plugin_wiring import build_plugin_supervisor
from lmcache.app.storage_loop import StorageLoop
from lmcache.app.telemetry import build_event_bus, build_metrics, build_telemetry, event_sinks
from lmcache.app.trace_wiring import build_trace_recorder
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.cache_engine import CacheEngine
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
from lmcache.domain.transfer_modes import serves_engine_driven
from lmcache.domain.units import gb_to_bytes
from lmcache.domain.workers import WorkerRegistry

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from lmcache.app.config.l2_base import L2SpecBase
    from lmcache.ports.l1_memory import L1Memory

__all__ = ("ServerContainer",)


def _event_log_size(size: int, observability_off: bool) -> int:
    return 0 if observability_off else size


def _arena_tensor(memory: L1Memory) -> torch.Tensor:
    return memory.tensor


def _adapter_types(specs: Sequence[L2SpecBase]) -> list[str]:
    return [spec_type(spec) for spec in specs]


class ServerContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache server`."""

    config = providers.Dependency(instance_of=ServerConfig)
    clock = providers.Singleton(SystemClock)
    trace_recorder = providers.Singleton(build_trace_recorder, config)  # None without --trace-level
    plugins = providers.Singleton(build_plugin_supervisor, config)  # None without runtime plugins
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
    event_bus = providers.Singleton(build_event_bus, config.provided.observability)
    coordinator_client = providers.Singleton(build_coordinator_client, config)  # None without a URL
    events = providers.Singleton(
        FanoutEventSink,
        providers.Callable(
            with_coordinator_sink, providers.Callable(event_sinks, kv_events, event_bus), coordinator_client
        ),
    )
    quotas = providers.Singleton(QuotaTable)
    eviction_policy = providers.Selector(
        config.provided.l1.eviction_policy,
        LRU=providers.Singleton(LruPolicy),
        IsolatedLRU=providers.Singleton(IsolatedLruPolicy, quotas),
        noop=providers.Singleton(NoopPolicy),
    )
    arena = providers.Singleton(
        ArenaAllocator,
        total_bytes=providers.Callable(gb_to_bytes, config.provided.l1.l1_size_gb),
        align_bytes=config.provided.l1.l1_align_bytes,
    )
    l1 = providers.Singleton(
        L1Manager,
        arena,
        eviction_policy,
        clock,
        events,
        write_ttl_s=config.provided.l1.l1_write_ttl_seconds,
        read_ttl_s=config.provided.l1.l1_read_ttl_seconds,
    )
    eviction_loop = providers.Singleton(
        EvictionLoop,
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
    l1_memory = providers.Singleton(
        open_l1_memory,
        providers.Callable(gb_to_bytes, config.provided.l1.l1_size_gb),
        use_lazy=config.provided.l1.l1_use_lazy,
        init_size_bytes=providers.Callable(gb_to_bytes, config.provided.l1.l1_init_size_gb),
        devdax_path=config.provided.l1.l1_devdax_path,
        shm_name=config.provided.mp.shm_name,
        want_shm_pool=providers.Callable(serves_engine_driven, config.provided.mp.supported_transfer_mode),
        gds_path=config.provided.l1.gds_l1_path,
    )
    l2_adapters = providers.Singleton(
        build_l2_adapters,
        specs=config.provided.l2.l2_adapter,
        quotas=quotas,  # per-adapter IsolatedLRU eviction reads the same quota table as L1
        events=events,
        dtype_of=providers.Callable(kv_dtype_resolver, workers),
    )
    store_controller = providers.Singleton(
        StoreController,
        l1,
        l1_memory,
        l2_adapters,
        policy=config.provided.l2.l2_store_policy,
        events=events,
    )
    prefetch_controller = providers.Singleton(
        PrefetchController,
        l1,
        l1_memory,
        l2_adapters,
        policy=config.provided.l2.l2_prefetch_policy,
        max_in_flight=config.provided.l2.l2_prefetch_max_in_flight,
        events=events,
    )
    supervisor = providers.Singleton(Supervisor, clock)
    storage_loop = providers.Singleton(StorageLoop)
    engine = providers.Singleton(
        CacheEngine,
        l1,
        sessions,
        workers,
        prefetch_controller,
        store_controller,
        submit=storage_loop.provided.submit,
        kv_events=kv_events,
        null_block_id=config.provided.mp.null_block_id,
        events=events,
    )
    registrar = providers.Singleton(
        CpuRegistrar,
        workers,
        providers.Callable(_arena_tensor, l1_memory),
        config.provided.mp.chunk_size,
        ensure_backed=l1_memory.provided.ensure_backed,
    )
    metrics = providers.Singleton(
        build_metrics,
        config,
        event_bus,
        providers.Callable(_adapter_types, config.provided.l2.l2_adapter),
        l1,
        workers,
        sessions,
        store_controller,
        coordinator_client,
        l2_adapters=l2_adapters,
    )
    telemetry = providers.Singleton(build_telemetry, config, event_bus, metrics)
    blend = providers.Singleton(  # None unless --engine-type blend|blend_legacy
        build_blend,
        config,
        engine,
        l1_memory,
        l2_adapters,
        providers.Callable(_arena_tensor, l1_memory),
        storage_loop,
        clock,
        events,
        event_bus,
        metrics,
    )
