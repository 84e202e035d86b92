"""Specs of the L2 adapters that live on this host (files, devices, memory) or in user code."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from lmcache.app.config.base import flag
from lmcache.app.config.l2_base import L2SpecBase

__all__ = ("DaxSpec", "FsNativeSpec", "FsSpec", "MockSpec", "NativePluginSpec", "PluginSpec", "RawBlockSpec")

_CAPACITY = "Capacity in GB reported for eviction; 0 disables capacity tracking."


class FsSpec(L2SpecBase):
    """fs: one file per object under base_path, asynchronous I/O."""

    type: Literal["fs"]
    impl = "lmcache.adapters.storage.fs:FsL2Adapter"
    base_path: str = flag(min_length=1, description="Directory holding the object files.")
    relative_tmp_dir: str | None = flag(
        None, description="Staging directory under base_path for atomic writes."
    )
    read_ahead_size: int | None = flag(None, gt=0, description="Bytes read first to trigger read-ahead.")
    use_odirect: bool = flag(False, description="Bypass the page cache with O_DIRECT.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)

    @field_validator("relative_tmp_dir")
    @classmethod
    def _relative_inside(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"must be a relative path without '..' (got {value!r})")
        return value


class FsNativeSpec(L2SpecBase):
    """fs_native: fs read and written with O_DIRECT on a thread pool (copy-free aligned loads)."""

    type: Literal["fs_native"]
    impl = "lmcache.adapters.storage.fs_native:FsNativeL2Adapter"
    base_path: str = flag(min_length=1, description="Directory holding the object files.")
    num_workers: int = flag(4, gt=0, description="I/O worker threads.")
    relative_tmp_dir: str = flag("", description="Staging directory under base_path.")
    use_odirect: bool = flag(True, description="Bypass the page cache with O_DIRECT.")
    read_ahead_size: int | None = flag(None, gt=0, description="Bytes read first to trigger read-ahead.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)


class MockSpec(L2SpecBase):
    """mock: in-memory, capacity-bounded, with a simulated bandwidth."""

    type: Literal["mock"]
    impl = "lmcache.adapters.storage.mock:MockL2Adapter"
    max_size_gb: float = flag(gt=0, description="Capacity in GB.")
    mock_bandwidth_gb: float = flag(gt=0, description="Simulated bandwidth in GB/s.")


class RawBlockSpec(L2SpecBase):
    """raw_block: fixed-size slots on a raw block device or pre-sized file."""

    type: Literal["raw_block"]
    impl = "lmcache.adapters.storage.raw_block:RawBlockL2Adapter"
    device_path: str = flag(min_length=1, description="Raw block device or pre-sized file.")
    slot_bytes: int = flag(gt=0, description="Bytes per slot; a multiple of block_align.")
    capacity_bytes: int = flag(0, ge=0, description="Usable bytes; 0 uses the whole device.")
    use_odirect: bool = flag(True, description="Open the device with O_DIRECT.")
    block_align: int = flag(4096, gt=0, description="I/O alignment in bytes.")
    header_bytes: int = flag(4096, gt=0, description="Per-slot header bytes; a multiple of block_align.")
    meta_total_bytes: int = flag(268435456, gt=0, description="Bytes reserved for the index checkpoint.")
    meta_checkpoint_interval_sec: int = flag(60, gt=0, description="Seconds between index checkpoints.")
    meta_enable_periodic: bool = flag(True, description="Checkpoint the index periodically.")
    load_checkpoint_on_init: bool = flag(True, description="Rebuild the index from the checkpoint at start.")
    meta_verify_on_load: bool = flag(True, description="Verify checkpointed entries on load.")
    io_engine: Literal["posix", "io_uring"] = flag("posix", description="I/O engine.")
    iouring_queue_depth: int = flag(256, gt=0, description="io_uring queue depth.")
    num_store_workers: int = flag(2, gt=0, description="Store worker threads.")
    num_lookup_workers: int = flag(1, gt=0, description="Lookup worker threads.")
    num_load_workers: int = flag(4, gt=0, description="Load worker threads.")


class DaxSpec(L2SpecBase):
    """dax: a Device-DAX (persistent or CXL memory) arena of fixed slots."""

    type: Literal["dax"]
    impl = "lmcache.adapters.storage.dax:DaxL2Adapter"
    device_path: str = flag(min_length=1, description="The /dev/dax device.")
    max_dax_size_gb: float = flag(gt=0, description="Bytes of the device used, in GB.")
    slot_bytes: int = flag(gt=0, description="Bytes per slot.")
    num_store_workers: int = flag(1, gt=0, description="Store worker threads.")
    num_lookup_workers: int = flag(1, gt=0, description="Lookup worker threads.")
    num_load_workers: int = flag(4, gt=0, description="Load worker threads.")


class PluginSpec(L2SpecBase):
    """plugin: a user's Python class implementing the L2Adapter port."""

    type: Literal["plugin"]
    impl = "lmcache.adapters.storage.plugin:PluginL2Adapter"
    module_path: str = flag(min_length=1, description="Dotted module path of the adapter class.")
    class_name: str = flag(min_length=1, description="Name of the adapter class in that module.")
    adapter_params: dict[str, Any] = flag({}, description="Keyword arguments passed to the class.")


class NativePluginSpec(L2SpecBase):
    """native_plugin: a native connector exposing batched get/set/exists and an event fd."""

    type: Literal["native_plugin"]
    impl = "lmcache.adapters.storage.native_plugin:NativePluginL2Adapter"
    module_path: str = flag(min_length=1, description="Dotted module path of the connector class.")
    class_name: str = flag(min_length=1, description="Name of the connector class in that module.")
    adapter_params: dict[str, Any] = flag({}, description="Keyword arguments passed to the connector.")
    max_capacity_gb: float = flag(0.0, ge=0, description=_CAPACITY)
