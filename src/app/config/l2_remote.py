"""Specs of the L2 adapters that talk to a storage service (NIXL, Mooncake, Aerospike, S3, Redis/Valkey)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from lmcache.app.config.base import flag
from lmcache.app.config.l2_base import L2SpecBase

__all__ = (
    "AerospikeSpec",
    "HfBucketSpec",
    "MooncakeStoreSpec",
    "NixlStoreDynamicSpec",
    "NixlStoreSpec",
    "RespSpec",
    "S3Spec",
    "ValkeySpec",
)

_CAPACITY = "Capacity in GB reported for eviction; 0 disables capacity tracking."
_FILE_BACKENDS = ("GDS", "GDS_MT", "POSIX", "HF3FS")


def _check_file_params(backend: str, params: dict[str, str]) -> None:
    if backend in _FILE_BACKENDS:
        missing = [key for key in ("file_path", "use_direct_io") if key not in params]
        if missing:
            raise ValueError(f"backend {backend} needs backend_params {', '.join(missing)}")


class NixlStoreSpec(L2SpecBase):
    """nixl_store: NIXL-backed storage with a pre-allocated descriptor pool."""

    type: Literal["nixl_store"]
    impl = "lmcache.adapters.storage.nixl_store:NixlL2Adapter"
    pip_extra = "nixl"
    backend: Literal["POSIX", "GDS", "GDS_MT", "HF3FS", "OBJ", "AZURE_BLOB"] = flag(
        description="NIXL backend."
    )
    backend_params: dict[str, str] = flag(
        {}, description="Backend parameters; file backends need file_path and use_direct_io."
    )
    pool_size: int = flag(gt=0, description="Pre-allocated storage descriptors.")

    @model_validator(mode="after")
    def _file_params(self) -> NixlStoreSpec:
        _check_file_params(self.backend, self.backend_params)
        return self


class NixlStoreDynamicSpec(L2SpecBase):
    """nixl_store_dynamic: NIXL storage with one file per object, sized by max_capacity_gb."""

    type: Literal["nixl_store_dynamic"]
    impl = "lmcache.adapters.storage.nixl_store:NixlDynamicL2Adapter"
    pip_extra = "nixl"
    backend: Literal["POSIX", "GDS", "GDS_MT", "HF3FS", "OBJ"] = flag(description="NIXL backend.")
    backend_params: dict[str, str] = flag(
        description="Backend parameters: max_capacity_gb (> 0); file "
        "backends also file_path and use_direct_io."
    )

    @model_validator(mode="after")
    def _params(self) -> NixlStoreDynamicSpec:
        _check_file_params(self.backend, self.backend_params)
        try:
            capacity = float(self.backend_params.get("max_capacity_gb", "0"))
        except ValueError:
            capacity = 0.0
        if capacity <= 0:
            raise ValueError("backend_params must include a positive max_capacity_gb")
        return self


class MooncakeStoreSpec(L2SpecBase):
    """mooncake_store: a Mooncake Store client; the connection keys are Mooncake's own.

    LMCache's names are accepted too: `master_server_addr` for `master_server_address` and
    `rdma_devices` for `device_name`.
    """

    type: Literal["mooncake_store"]
    impl = "lmcache.adapters.storage.mooncake:MooncakeL2Adapter"
    pip_extra = "mooncake"
    model_config = ConfigDict(populate_by_name=True)
    num_workers: int = flag(4, gt=0, description="Client worker threads.")
    local_hostname: str = flag(
        "127.0.0.1", min_length=1, description="This host's address as Mooncake peers reach it."
    )
    metadata_server: str = flag(
        "P2PHANDSHAKE",
        min_length=1,
        description="Mooncake metadata server (http://host:port/metadata, etcd://...) or P2PHANDSHAKE.",
    )
    master_server_address: str = Field(
        min_length=1,
        validation_alias=AliasChoices("master_server_address", "master_server_addr"),
        description="Mooncake master RPC address (host:port).",
    )
    protocol: Literal["tcp", "rdma"] = flag("tcp", description="Transfer protocol.")
    device_name: str = Field(
        "",
        validation_alias=AliasChoices("device_name", "rdma_devices"),
        description="RDMA device(s) for protocol rdma.",
    )
    global_segment_size: int = flag(
        0,
        ge=0,
        description="Bytes this client contributes to the store; 0 = none (data lives in storage nodes "
        "and outlives this server).",
    )
    local_buffer_size: int = flag(16 << 20, ge=0, description="Bytes of Mooncake's local transfer buffer.")
    replica_num: int = flag(1, gt=0, description="Replicas per object.")
    key_prefix: str = flag(
        "lmcache:", min_length=1, description="Prefix of this cache's object names (one namespace per fleet)."
    )
    master_metrics_url: str | None = flag(
        None,
        description="The master's HTTP admin server (http://host:port, mooncake_master --metrics_port); "
        "enables key listing and usage. Unset: listings are empty.",
    )
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)


class AerospikeSpec(L2SpecBase):
    """aerospike: the native Aerospike connector."""

    type: Literal["aerospike"]
    impl = "lmcache.adapters.storage.aerospike:AerospikeL2Adapter"
    pip_extra = "aerospike"
    hosts: str = flag(min_length=1, description="Seed hosts, host:port[,host:port...].")
    namespace: str = flag("lmcache", min_length=1, description="Aerospike namespace.")
    set_name: str = Field("kv_chunks", min_length=1, alias="set", description="Aerospike set.")
    num_workers: int = flag(8, gt=0, description="C++ I/O worker threads.")
    read_timeout_ms: int = flag(1000, gt=0, description="Read timeout.")
    write_timeout_ms: int = flag(2000, gt=0, description="Write timeout.")
    default_ttl_seconds: int = flag(86400, ge=0, description="Record TTL; 0 uses the namespace default.")
    target_segment_bytes: int = flag(0, ge=0, description="Shard target size; 0 discovers it.")
    max_record_bytes: int = flag(0, ge=0, description="Record size cap; 0 discovers it.")
    username: str = flag("", description="Enterprise Edition user.")
    password: str = flag("", description="Enterprise Edition password.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)

    model_config = ConfigDict(populate_by_name=True)


class S3Spec(L2SpecBase):
    """s3: AWS S3 or an S3-compatible object store."""

    type: Literal["s3"]
    impl = "lmcache.adapters.storage.s3:S3L2Adapter"
    pip_extra = "s3"
    s3_endpoint: str = flag(min_length=1, description="Bucket URL: s3://<bucket> or a bare host form.")
    s3_region: str = flag(min_length=1, description="AWS region.")
    s3_num_io_threads: int = flag(64, gt=0, description="Concurrent I/O requests.")
    s3_prefer_http2: bool = flag(True, description="Negotiate HTTP/2 through ALPN.")
    s3_enable_s3express: bool = flag(False, description="Sign for S3 Express One Zone.")
    disable_tls: bool = flag(False, description="Plain HTTP (non-AWS endpoints).")
    aws_access_key_id: str | None = flag(
        None, description="Static credentials; unset uses the default chain."
    )
    aws_secret_access_key: str | None = flag(
        None, description="Static credentials; unset uses the default chain."
    )
    endpoint_url: str | None = flag(
        None,
        description="Override of the service URL for S3-compatible servers (e.g. http://127.0.0.1:9000).",
    )
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)


class RespSpec(L2SpecBase):
    """resp: Redis or Valkey over RESP (redis:// or rediss://)."""

    type: Literal["resp"]
    impl = "lmcache.adapters.storage.resp:RedisL2Adapter"
    pip_extra = "redis"
    host: str = flag(min_length=1, description="Server host; env fallback LMCACHE_RESP_HOST.")
    port: int = flag(ge=1, le=65535, description="Server port; env fallback LMCACHE_RESP_PORT.")
    num_workers: int = flag(8, gt=0, description="Connections in the pool.")
    username: str = flag("", description="ACL user; env fallback LMCACHE_RESP_USERNAME.")
    password: str = flag("", description="Password; env fallback LMCACHE_RESP_PASSWORD.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)
    cluster: bool | None = flag(
        None,
        description="Redis Cluster mode (keys spread over the slots of every primary); unset: detected "
        "from the server (INFO cluster) at first use.",
    )

    @model_validator(mode="before")
    @classmethod
    def _env_fallbacks(cls, data: Any) -> Any:
        # The documented LMCACHE_RESP_* variables fill fields the JSON leaves out or empty.
        if isinstance(data, dict):
            for key in ("host", "port", "username", "password"):
                value = os.environ.get(f"LMCACHE_RESP_{key.upper()}")
                if value and not data.get(key):
                    data = {**data, key: value}
        return data

    @field_validator("host")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if "://" in value and not value.startswith(("redis://", "rediss://")):
            raise ValueError(f"must be a host name or a redis:// or rediss:// URL (got {value!r})")
        return value


class ValkeySpec(RespSpec):
    """valkey: LMCache's name for a Valkey server; the same RESP adapter and fields as resp."""

    type: Literal["valkey"]  # type: ignore[assignment]


class HfBucketSpec(L2SpecBase):
    """hfbucket: a Hugging Face Storage Bucket (mutable, non-versioned object storage on the Hub)."""

    type: Literal["hfbucket"]
    impl = "lmcache.adapters.storage.hfbucket:HfBucketL2Adapter"
    pip_extra = "hfbucket"
    bucket: str = flag(min_length=1, description="Bucket id, namespace/name.")
    prefix: str = flag("lmcache/", description="Path prefix of this cache's objects inside the bucket.")
    token: str | None = flag(None, description="Hub token; unset uses HF_TOKEN or the stored login.")
    endpoint: str | None = flag(None, description="Hub endpoint override (a private Hub).")
    num_workers: int = flag(8, gt=0, description="Concurrent transfers.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)
