"""Observability: the event bus, metrics, logging, tracing, lookup-hash logs and storage traces."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from lmcache.app.config.base import Section, cross_field, flag

__all__ = ("ObservabilityConfig",)


class ObservabilityConfig(Section):
    """What the server reports about itself, and where."""

    disable_observability: bool = flag(False, description="Master switch: no event bus at all.")
    disable_metrics: bool = flag(False, description="No metrics subscribers (no Prometheus endpoint).")
    disable_logging: bool = flag(False, description="No logging subscribers.")
    enable_tracing: bool = flag(False, description="Register tracing subscribers; needs --otlp-endpoint.")
    event_bus_queue_size: int = flag(
        10000, gt=0, metavar="N", description="Events the bus queues before dropping new ones."
    )
    otlp_endpoint: str | None = flag(
        None, metavar="URL", description="OTLP gRPC endpoint receiving metrics and traces."
    )
    prometheus_port: int = flag(
        9090,
        ge=1,
        le=65535,
        metavar="PORT",
        description="Port of the standalone Prometheus /metrics endpoint, bound on --http-host (all "
        "interfaces by default); the HTTP port serves the same /metrics.",
    )
    metrics_sample_rate: float = flag(
        0.01,
        ge=0,
        le=1,
        metavar="RATIO",
        description="Share of chunks whose lifecycle histograms are recorded; counters always count every "
        "event.",
    )
    lookup_hash_log_dir: str = flag(
        "",
        metavar="DIR",
        default_help='"" (disabled)',
        description="Directory of rotating JSONL files with the chunk hashes of each lookup; empty disables.",
    )
    lookup_hash_log_rotation_interval: float = flag(
        21600, gt=0, metavar="SECONDS", description="Age at which a lookup-hash log file rotates."
    )
    lookup_hash_log_rotation_max_size: int = flag(
        104857600, gt=0, metavar="BYTES", description="Size at which a lookup-hash log file rotates early."
    )
    lookup_hash_log_max_files: int = flag(
        100, gt=0, metavar="N", description="Lookup-hash log files kept; the oldest are deleted."
    )
    trace_level: Literal["storage"] | None = flag(
        None,
        default_help="unset (no tracing)",
        description="Record storage-level traces (see lmcache trace).",
    )
    trace_output: Path | None = flag(
        None,
        metavar="PATH",
        default_help="unset: a timestamped file under $TMPDIR",
        description="Destination of recorded .lct trace files: a file (never overwritten) or an existing "
        "directory (a timestamped file inside it).",
    )
    trace_rotation_max_size: int = flag(
        1 << 30,
        gt=0,
        metavar="BYTES",
        description="Size at which a trace file is closed and the next part (<name>.1.lct, ...) begun.",
    )
    trace_queue_size: int = flag(
        65536,
        gt=0,
        le=1 << 24,
        metavar="N",
        description="Trace records queued for the writer thread; beyond it records are dropped and counted.",
    )

    @model_validator(mode="after")
    def _tracing_needs_endpoint(self) -> ObservabilityConfig:
        if self.enable_tracing and not self.otlp_endpoint:
            raise cross_field("--enable-tracing needs --otlp-endpoint")
        return self
