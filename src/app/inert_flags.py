"""Start-up warnings for server flags that are set but change nothing on this server, each saying why.

The rule (issue 24): every flag of the spec either changes behaviour or, when given, logs one warning at
start-up naming it and why it has no effect. A flag counts as given when a profile, a documented
environment variable or the command line set it (pydantic's `model_fields_set`), so defaults never warn.
Each rule below returns the reason, or None while the flag does act; `tests/integration/server/
test_every_flag.py` starts a server with every spec flag and checks it acts or warns.

Three kinds: flags of features this build does not have (the periodic notifier has nothing to wake: L2
completions resume the asyncio storage loop directly; the GDS slab is mapped through the page cache, not
opened with O_DIRECT), flags that only refine another feature that is off (lookup-hash log rotation
without `--lookup-hash-log-dir`, `--trace-output` without `--trace-level`, `--runtime-plugin-config`
without plugins), and flags whose hardware is absent (lazy pinning without CUDA or outside the
anonymous arena).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.app.config.fields import leaf_fields
from lmcache.domain.transfer_modes import serves_engine_driven

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.app.config import ServerConfig

__all__ = ("RULES", "Facts", "given_flags", "ineffective_flags", "warn_ineffective_flags")

logger = logging.getLogger("lmcache.flags")


@dataclass(frozen=True)
class Facts:
    """What the running server found, beyond its configuration.

    Attributes:
        cuda: A CUDA device is available (pinning exists).
        memory_kind: The L1 medium built: `shm` (engine-driven pool), `anonymous`, `devdax` or `gds`.
    """

    cuda: bool
    memory_kind: str


_NO_L2 = "no --l2-adapter is configured, so nothing is stored to or loaded from L2"
_NO_COORDINATOR = "it configures fleet registration, which is off without --coordinator-url"


def _pinning(c: ServerConfig, f: Facts) -> str | None:
    if f.memory_kind in ("devdax", "gds"):
        return None  # the DAX and GDS media require --no-l1-use-lazy (config validation): not a no-op
    if not f.cuda:
        return "there is no CUDA device, so the L1 arena is never pinned (its pages are backed as used)"
    if f.memory_kind != "anonymous":
        return (
            "the L1 arena is the engine-driven SHM pool (--supported-transfer-mode auto|engine_driven), "
            'which is not pinned; use --supported-transfer-mode lmcache_driven or --shm-name ""'
        )
    return None


def _init_size(c: ServerConfig, f: Facts) -> str | None:
    if f.memory_kind in ("devdax", "gds"):
        return f"the L1 arena is the {f.memory_kind} mapping, which is not pinned in steps"
    if not c.l1.l1_use_lazy:
        return "--no-l1-use-lazy pins the whole arena at once"
    return _pinning(c, f)


def _metrics_off(c: ServerConfig, f: Facts) -> str | None:
    if c.observability.disable_observability:
        return "--disable-observability turns metrics off"
    if c.observability.disable_metrics:
        return "--disable-metrics turns metrics off"
    return None


def _bus_off(c: ServerConfig, f: Facts) -> str | None:
    return (
        "--disable-observability turns the event bus off" if c.observability.disable_observability else None
    )


def _no_bus(c: ServerConfig, f: Facts) -> str | None:
    from lmcache.app.telemetry import wants_bus  # the rule the container selects by

    return None if wants_bus(c.observability) else "no subscriber needs the event bus, so none is built"


def _hash_log_off(c: ServerConfig, f: Facts) -> str | None:
    if not c.observability.lookup_hash_log_dir:
        return "it tunes the lookup-hash log, which is off without --lookup-hash-log-dir"
    return _bus_off(c, f)


def _tracing_off(c: ServerConfig, f: Facts) -> str | None:
    if not c.observability.enable_tracing:
        return "spans are exported only with --enable-tracing"
    return _bus_off(c, f)


def _blend_fleet(c: ServerConfig, f: Facts) -> str | None:
    if c.coordinator.coordinator_url is None:
        return _NO_COORDINATOR
    if c.mp.engine_type == "default":
        return "it tunes CacheBlend's fleet matches, which need --engine-type blend"
    return None


def _event_flush(c: ServerConfig, f: Facts) -> str | None:
    if c.coordinator.coordinator_url is None:
        return _NO_COORDINATOR
    if not c.coordinator.coordinator_l2_event_reporting:
        return "L2 events are reported only with --coordinator-l2-event-reporting"
    return None


def _kv_event_log(c: ServerConfig, f: Facts) -> str | None:
    if c.observability.disable_observability:
        return "--disable-observability turns the KV-event log off"
    return None


def _kv_event_bytes(c: ServerConfig, f: Facts) -> str | None:
    if c.mp.kv_event_log_size == 0:
        return "--kv-event-log-size 0 turns the KV-event log off"
    return _kv_event_log(c, f)


def _shm_name(c: ServerConfig, f: Facts) -> str | None:
    if not serves_engine_driven(c.mp.supported_transfer_mode):
        return (
            "the SHM pool serves the engine-driven path, which --supported-transfer-mode lmcache_driven "
            "leaves out"
        )
    if f.memory_kind == "gds":
        return "the L1 arena is the GDS slab, not an SHM pool"
    return None


RULES: dict[str, Callable[[ServerConfig, Facts], str | None]] = {
    # Features this build does not have.
    # Flags that refine a feature that is off.
    "mp.runtime_plugin_config": lambda c, f: (
        "no --runtime-plugin-locations: no plugin is launched to receive the JSON"
        if c.mp.runtime_plugin_config and not c.mp.runtime_plugin_locations
        else None
    ),
    "observability.trace_output": lambda c, f: (
        "storage traces are off without --trace-level storage"
        if c.observability.trace_level is None
        else None
    ),
    "l2.periodic_notifier_interval_ms": lambda c, f: (
        "there is no periodic notifier to tune: L2 adapter completions resume the asyncio storage loop "
        "directly, with no polling interval"
    ),
    "l1.gds_l1_use_direct_io": lambda c, f: (
        "the GDS slab is mapped through the page cache; O_DIRECT belongs to cuFile DMA, which this build "
        "does not do"
        if c.l1.gds_l1_path is not None
        else "it applies to the GDS L1 slab, which is off without --gds-l1-path"
    ),
    # Flags whose hardware is absent.
    "l1.l1_use_lazy": _pinning,
    "l1.l1_init_size_gb": _init_size,
    # Flags refining a feature that is off.
    "mp.script_allowed_imports": lambda c, f: (
        None if c.http.enable_run_script else "POST /run_script is off without --enable-run-script"
    ),
    "mp.shm_name": _shm_name,
    "mp.worker_registration_grace_seconds": lambda c, f: (
        "--worker-reap-timeout-seconds 0 turns the worker reaper off"
        if c.mp.worker_reap_timeout_seconds == 0
        else None
    ),
    "mp.kv_event_log_size": _kv_event_log,
    "mp.kv_event_log_max_bytes": _kv_event_bytes,
    "mp.enable_segmented_prefix": lambda c, f: (
        "it applies to CacheBlend only (--engine-type blend)" if c.mp.engine_type == "default" else None
    ),
    "l1.eviction_trigger_watermark": lambda c, f: (
        "--eviction-policy noop never evicts" if c.l1.eviction_policy == "noop" else None
    ),
    "l1.eviction_ratio": lambda c, f: (
        "--eviction-policy noop never evicts" if c.l1.eviction_policy == "noop" else None
    ),
    "l2.l2_store_policy": lambda c, f: None if c.l2.l2_adapter else _NO_L2,
    "l2.l2_prefetch_policy": lambda c, f: None if c.l2.l2_adapter else _NO_L2,
    "l2.l2_prefetch_max_in_flight": lambda c, f: None if c.l2.l2_adapter else _NO_L2,
    "observability.disable_metrics": _bus_off,
    "observability.disable_logging": _bus_off,
    "observability.enable_tracing": _bus_off,
    "observability.event_bus_queue_size": lambda c, f: _bus_off(c, f) or _no_bus(c, f),
    "observability.otlp_endpoint": _tracing_off,
    "observability.prometheus_port": _metrics_off,
    "observability.metrics_sample_rate": _metrics_off,
    "observability.lookup_hash_log_dir": _bus_off,
    "observability.lookup_hash_log_rotation_interval": _hash_log_off,
    "observability.lookup_hash_log_rotation_max_size": _hash_log_off,
    "observability.lookup_hash_log_max_files": _hash_log_off,
    "coordinator.coordinator_advertise_ip": lambda c, f: (
        None if c.coordinator.coordinator_url else _NO_COORDINATOR
    ),
    "coordinator.coordinator_heartbeat_interval": lambda c, f: (
        None if c.coordinator.coordinator_url else _NO_COORDINATOR
    ),
    "coordinator.coordinator_l2_event_reporting": lambda c, f: (
        None if c.coordinator.coordinator_url else _NO_COORDINATOR
    ),
    "coordinator.coordinator_l2_event_flush_interval": _event_flush,
    "coordinator.coordinator_blend_timeout": _blend_fleet,
    "coordinator.coordinator_blend_match_concurrency": _blend_fleet,
}


def given_flags(config: ServerConfig) -> list[str]:
    """Dotted dests (`l1.l1_use_lazy`) of the fields a profile, the environment or a flag set."""
    given = []
    for leaf in leaf_fields(type(config)):
        owner: object = config
        for part in leaf.path[:-1]:
            owner = getattr(owner, part)
        if leaf.name in getattr(owner, "model_fields_set", ()):
            given.append(leaf.dest)
    return given


def ineffective_flags(config: ServerConfig, facts: Facts) -> list[tuple[str, str]]:
    """(flag, reason) for every given flag that has no effect on this server, in declaration order."""
    flags = {leaf.dest: leaf.flag for leaf in leaf_fields(type(config))}
    out = []
    for dest in given_flags(config):
        rule = RULES.get(dest)
        reason = rule(config, facts) if rule is not None else None
        if reason:
            out.append((flags[dest], reason))
    return out


def warn_ineffective_flags(config: ServerConfig, facts: Facts) -> list[tuple[str, str]]:
    """Log one warning per given flag that has no effect; returns them."""
    found = ineffective_flags(config, facts)
    for flag, reason in found:
        logger.warning("%s has no effect: %s", flag, reason)
    return found
