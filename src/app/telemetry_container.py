"""Composition root, telemetry part: the metrics and the event-bus subscribers of `lmcache server`.

`TelemetryContainer` extends the storage engine's graph (`storage_container.py`) with what observes it:
the Prometheus metrics, the event logger, the lookup-hash log and the OTel span exporter (each a
Selector on its flags, `telemetry.py`'s rules), and the `Telemetry` that subscribes them to the bus.
`ServerContainer` (`container.py`) extends this with the serving side.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dependency_injector import providers

from lmcache.adapters.telemetry.event_log import EventLogger
from lmcache.adapters.telemetry.lookup_hash_log import LookupHashLog
from lmcache.adapters.telemetry.server_metrics import ServerMetrics
from lmcache.adapters.telemetry.tracing import SpanExporterSubscriber, TracingUnavailable
from lmcache.app.config.errors import ConfigError
from lmcache.app.l2_specs import spec_type
from lmcache.app.storage_container import StorageContainer
from lmcache.app.telemetry import (
    Telemetry,
    wants_logging,
    wants_lookup_hash_log,
    wants_metrics,
    wants_tracing,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.adapters.coordinator.client import CoordinatorClient
    from lmcache.adapters.coordinator.l2_events import L2EventReporter
    from lmcache.app.config.l2_base import L2SpecBase
    from lmcache.app.config.observability import ObservabilityConfig

__all__ = ("TelemetryContainer",)

_S = StorageContainer
_obs = _S.config.provided.observability


def _adapter_types(specs: Sequence[L2SpecBase]) -> list[str]:
    return [spec_type(spec) for spec in specs]


def _on_off(on: bool) -> str:
    return "on" if on else "off"


def _when(rule: Callable[[ObservabilityConfig], bool]) -> providers.Callable[str]:
    """A Selector's key: "on" when `rule` holds for the observability flags."""
    return providers.Callable(_on_off, providers.Callable(rule, _obs))


def _reporter(client: CoordinatorClient | None) -> L2EventReporter | None:
    """The coordinator event reporter whose drops the metrics export (--coordinator-l2-event-reporting)."""
    return client.events if client is not None else None


def _lookup_hash_log(obs: ObservabilityConfig) -> LookupHashLog:
    directory = Path(obs.lookup_hash_log_dir).expanduser()
    try:
        return LookupHashLog(
            directory,
            obs.lookup_hash_log_rotation_interval,
            obs.lookup_hash_log_rotation_max_size,
            obs.lookup_hash_log_max_files,
        )
    except OSError as exc:
        raise ConfigError(f"--lookup-hash-log-dir: cannot use {directory} ({exc.strerror or exc})") from None


def _span_exporter(instance_id: str, endpoint: str) -> SpanExporterSubscriber:
    try:
        return SpanExporterSubscriber.for_endpoint(instance_id, endpoint)
    except TracingUnavailable as exc:
        raise ConfigError(str(exc)) from None


class TelemetryContainer(StorageContainer):
    """The storage engine's graph plus its telemetry (module docstring)."""

    adapter_types = providers.Callable(_adapter_types, _S.config.provided.l2.l2_adapter)
    metrics = providers.Singleton(  # disabled (empty, no port) with --disable-metrics/-observability
        ServerMetrics,
        enabled=providers.Callable(wants_metrics, _obs),
        sample_rate=_obs.metrics_sample_rate,
        chunk_size=_S.config.provided.mp.chunk_size,
        adapter_types=adapter_types,
        l1=_S.l1,
        bus=_S.event_bus,
        workers=_S.workers,
        sessions=_S.sessions,
        store_queue=_S.store_controller,
        coordinator_events=providers.Callable(_reporter, _S.coordinator_client),
        l2_adapters=_S.l2_adapters,
    )
    event_logger = providers.Selector(
        _when(wants_logging), on=providers.Singleton(EventLogger), off=providers.Object(None)
    )
    lookup_hash_log = providers.Selector(
        _when(wants_lookup_hash_log),
        on=providers.Singleton(_lookup_hash_log, _obs),
        off=providers.Object(None),
    )
    span_exporter = providers.Selector(
        _when(wants_tracing),
        on=providers.Singleton(_span_exporter, _S.config.provided.mp.instance_id, _obs.otlp_endpoint),
        off=providers.Object(None),
    )
    telemetry = providers.Singleton(
        Telemetry,
        _S.config,
        _S.event_bus,
        metrics,
        subscribers=providers.List(event_logger, lookup_hash_log, span_exporter),  # subscribed in order
    )
