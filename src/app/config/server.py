"""The MP server and HTTP frontend sections of `lmcache server` (spec: configuration-reference.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from lmcache.app.config.base import Section, cross_field, flag
from lmcache.domain.transfer_modes import TransferMode

__all__ = ("HttpConfig", "MpServerConfig")

HashAlgorithm = Literal["builtin", "sha256_cbor", "blake3"]
EngineType = Literal["default", "blend", "blend_legacy"]

_PORT: dict[str, Any] = {"ge": 1, "le": 65535, "metavar": "PORT"}


class MpServerConfig(Section):
    """ZMQ control plane, worker pools, hashing and worker liveness."""

    instance_id: str = flag(
        default_factory=lambda: str(uuid.uuid4()),
        min_length=1,
        metavar="ID",
        default_help="a fresh UUID v4 per start",
        description="Stable identity of this server: the coordinator membership key and the OTel "
        "service.instance.id of every metric and span.",
    )
    host: str = flag("localhost", min_length=1, metavar="HOST", description="Address the ZMQ server binds.")
    port: int = flag(5555, **_PORT, description="Port the ZMQ server binds.")
    chunk_size: int = flag(256, gt=0, metavar="N", description="KV cache chunk size in tokens.")
    max_workers: int = flag(
        1,
        ge=1,
        metavar="N",
        description="Base worker-thread count; default of both --max-gpu-workers and --max-cpu-workers.",
    )
    max_gpu_workers: int = flag(
        None,
        ge=1,
        metavar="N",
        default_help="inherits --max-workers",
        description="Threads of the affinity pool (store/retrieve); one client's "
        "requests always run on the same thread.",
    )
    max_cpu_workers: int = flag(
        None,
        ge=1,
        metavar="N",
        default_help="inherits --max-workers",
        description="Threads of the normal pool (lookup and other blocking ops).",
    )
    kv_copy_threads: int = flag(
        2,
        ge=1,
        le=64,
        metavar="N",
        description="Threads one store or retrieve splits its CPU copies over (by layer). Two threads move "
        "about 1.5x the bytes of one on a 2-core VM (benchmarks/data_path.py); 1 keeps the copy on the "
        "affinity thread alone, leaving the other cores to a CPU engine.",
    )
    kv_copy_pin: bool = flag(
        True,
        description="Run the copy threads of one store or retrieve on different CPUs for the copy's length "
        "(each thread's own CPU mask is restored after). A scheduler that packs idle threads onto one CPU "
        "otherwise runs both halves of a copy in turns on one core: retrieve 21-23 ms against 18 ms "
        "pinned on a 2-core VM (benchmarks/real_client.py). Off leaves placement to the scheduler.",
    )
    hash_algorithm: HashAlgorithm = flag("blake3", description="Hash algorithm for token chunks.")
    engine_type: EngineType = flag(
        "default",
        description="Cache engine: default prefix caching, blend (CacheBlend V3) or blend_legacy; "
        "the blend engines need --supported-transfer-mode lmcache_driven or auto.",
    )
    supported_transfer_mode: TransferMode = flag(
        "auto",
        description="Worker-to-server transfer paths loaded: lmcache_driven (store/retrieve over "
        "CUDA IPC or CPU SHM), engine_driven (prepare/commit), or auto (both).",
    )
    runtime_plugin_locations: list[str] = flag(
        [],
        metavar="PATH",
        description="Runtime plugin scripts or directories launched beside the server; "
        "they get the server config in LMCACHE_RUNTIME_PLUGIN_CONFIG.",
    )
    runtime_plugin_config: dict[str, Any] = flag(
        {},
        metavar="JSON",
        default_help="{}",
        description="JSON object forwarded to runtime plugins in LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG.",
    )
    runtime_plugin_max_restarts: int = flag(
        5,
        ge=0,
        le=1000,
        metavar="N",
        description="Consecutive crashes of a runtime plugin that are restarted (with a doubling backoff) "
        "before it is left stopped; a run over a minute resets the count.",
    )
    runtime_plugin_restart_backoff_seconds: float = flag(
        1.0,
        gt=0,
        le=3600,
        metavar="SECONDS",
        description="Delay before restarting a crashed runtime plugin, doubled per consecutive crash "
        "(at most 30 s).",
    )
    runtime_plugin_stop_grace_seconds: float = flag(
        5.0,
        ge=0,
        le=300,
        metavar="SECONDS",
        description="At shutdown, time between SIGTERM and SIGKILL for each runtime plugin.",
    )
    script_allowed_imports: list[str] = flag(
        [], metavar="MODULE", description="Modules that scripts posted to /run_script may import."
    )
    shm_name: str | None = flag(
        None,
        metavar="NAME",
        default_help="unset: an automatic name",
        description='SHM segment of the engine-driven transfer pool: unset picks a name, "" disables '
        "SHM (bytes travel in the message), any other value is used as the exact name.",
    )
    worker_reap_timeout_seconds: float = flag(
        120.0,
        ge=0,
        metavar="SECONDS",
        description="Silence after which a worker that has pinged at least once is reaped; 0 disables.",
    )
    worker_registration_grace_seconds: float = flag(
        3600.0,
        ge=0,
        metavar="SECONDS",
        description="Silence allowed to a registered worker that never pinged; must be >= "
        "--worker-reap-timeout-seconds.",
    )
    session_ttl_seconds: float = flag(
        600.0,
        gt=0,
        metavar="SECONDS",
        description="Lifetime of a request session (cached chunk hashes, lookup result) after its creation.",
    )
    busy_poll_us: int = flag(
        50,
        ge=0,
        le=100_000,
        metavar="MICROSECONDS",
        description="After answering, the socket thread polls without sleeping this long before it blocks "
        "again, so the next request of a back-to-back burst skips a thread wake-up (512-token lookups: 176 "
        "us p50 against 262 us with 0). Kept short: with LMCache 0.5.6's bench beside the server on 2 busy "
        "cores, 300 us of spinning added 0.3 ms to each lookup (the spinning thread takes the core the "
        "client needs) where 50 and 0 added none (benchmarks/real_client.py, benchmarks/data_path.py); 0 "
        "always blocks.",
    )
    null_block_id: int = flag(
        0,
        metavar="ID",
        description="Engine block id that marks an unallocated block; a chunk made only of it is not stored.",
    )
    kv_event_log_size: int = flag(
        32768,
        ge=0,
        metavar="N",
        description="Records kept by the KV-event log behind subscribe_kv_events; 0 disables the stream.",
    )
    kv_event_log_max_bytes: int = flag(
        32 << 20,
        ge=1 << 16,
        le=1 << 40,
        metavar="BYTES",
        description="Memory the KV-event log's records may hold (estimated); the oldest records go first "
        "once it is reached, as once --kv-event-log-size records are kept.",
    )
    enable_segmented_prefix: bool = flag(
        False,
        description="CacheBlend only: on a mid-prefix L2 retrieve failure keep the post-gap chunks "
        "and recompute only the gap.",
    )

    @model_validator(mode="before")
    @classmethod
    def _inherit_pool_sizes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        base = data.get("max_workers", 1)
        try:
            int(base)
        except (TypeError, ValueError):
            return data  # max_workers reports its own error
        missing = {name: base for name in ("max_gpu_workers", "max_cpu_workers") if data.get(name) is None}
        return {**data, **missing}

    @field_validator("runtime_plugin_config", mode="before")
    @classmethod
    def _parse_json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc.msg})") from exc
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> MpServerConfig:
        if self.worker_registration_grace_seconds < self.worker_reap_timeout_seconds:
            raise cross_field(
                f"--worker-registration-grace-seconds ({self.worker_registration_grace_seconds:g}) must be"
                f" >= --worker-reap-timeout-seconds ({self.worker_reap_timeout_seconds:g})"
            )
        if self.engine_type != "default" and self.supported_transfer_mode == "engine_driven":
            raise cross_field(
                f"--engine-type {self.engine_type} needs --supported-transfer-mode "
                "lmcache_driven or auto (got engine_driven)"
            )
        return self


class HttpConfig(Section):
    """HTTP frontend (Litestar on uvicorn)."""

    http_host: str = flag(
        "0.0.0.0", min_length=1, metavar="HOST", description="Address the HTTP frontend binds."
    )
    http_port: int = flag(8080, **_PORT, description="Port the HTTP frontend binds.")
    http_auth_token: str | None = flag(
        None,
        min_length=16,
        max_length=4096,
        pattern=r"^[A-Za-z0-9._~+-]+$",
        metavar="TOKEN",
        env="LMCACHE_HTTP_AUTH_TOKEN",
        default_help="unset (no authentication)",
        description="Bearer token every HTTP route but /healthcheck and /metrics requires "
        "(Authorization: Bearer TOKEN, or a URL path starting /token/TOKEN for clients that cannot send "
        "headers); at least 16 URL-safe characters. Prefer the environment variable: a flag shows in ps.",
    )
    http_ssl_certfile: str | None = flag(
        None, metavar="PATH", description="PEM certificate (chain) of the HTTP frontend: serve HTTPS."
    )
    http_ssl_keyfile: str | None = flag(
        None, metavar="PATH", description="PEM private key of --http-ssl-certfile."
    )
    enable_run_script: bool = flag(
        False,
        env="LMCACHE_ENABLE_RUN_SCRIPT",
        description="Let POST /run_script run uploaded Python scripts inside the server (imports limited "
        "to --script-allowed-imports). Off: the endpoint answers 404. Only for trusted operators: the "
        "restrictions are guard rails, not a sandbox.",
    )

    @field_validator("http_ssl_certfile", "http_ssl_keyfile")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.http_ssl_certfile is None) != (self.http_ssl_keyfile is None):
            raise cross_field("--http-ssl-certfile and --http-ssl-keyfile go together: give both or neither")
        return self
