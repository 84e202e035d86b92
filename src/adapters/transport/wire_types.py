"""msgspec types of the ZMQ payloads and responses (wire-protocol.md §3-4), field order = wire order.

Structs travel as maps keyed by field name with every field, decode ignoring unknown keys (except the
IPC descriptors, which forbid them) and fill defaults for missing ones.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from lmcache.adapters.transport.wire_tokens import WireTokens
from lmcache.domain.keys import InvalidKeyError, validate_cache_salt

EngineType = Literal["vllm", "atom", "sglang", "trtllm", "mock"]


class CacheKey(msgspec.Struct):
    """`IPCCacheServerKey` (§3.1)."""

    model_name: str
    world_size: int
    worker_id: int | None
    token_ids: list[int]
    start: int
    end: int
    request_id: str
    cache_salt: str = ""
    request_configs: dict[str, Any] | None = None
    num_kv_readers: int = 0

    def __post_init__(self) -> None:
        try:
            validate_cache_salt(self.cache_salt)
        except InvalidKeyError as exc:
            raise ValueError(str(exc)) from exc


class WireCacheKey(CacheKey):
    """A `CacheKey` as the server decodes it: `token_ids` stays the wire's msgpack array (`WireTokens`).

    The lookup path then never builds the Python ints of a token list it has seen before; anything that
    reads `token_ids` gets them through the `Sequence` interface. Only decoded, never encoded.
    """

    token_ids: msgspec.Raw  # type: ignore[assignment]  # replaced by WireTokens in __post_init__

    def __post_init__(self) -> None:
        super().__post_init__()
        self.token_ids = WireTokens(bytes(self.token_ids))  # type: ignore[assignment]


class EngineGroupInfo(msgspec.Struct, frozen=True):
    """One LMCache KV group of a registration (§3.2)."""

    engine_group_id: int
    layer_indices: tuple[int, ...] = ()
    tokens_per_block: int = 0
    sw_size_tokens: int = -1
    extra_object_group_tag: int = 0
    recurrent_state: bool = False


class RegisterEngineDrivenContextPayload(msgspec.Struct):
    """Op 14's payload."""

    instance_id: int
    model_name: str
    world_size: int
    block_size: int
    num_layers: int
    hidden_dim_size: int
    dtype_str: str
    use_mla: bool
    num_physical_slots: int | None = None


class RegisterEngineDrivenContextResponse(msgspec.Struct):
    """Op 14's response: the SHM pool to map ("" and 0 = none)."""

    shm_name: str = ""
    pool_size: int = 0


class PrepareStoreResponse(msgspec.Struct):
    """Op 16's response: `{"slots": [...], "chunk_indices": [...]}` with a pool, `{}` without."""

    context: dict[str, Any] = msgspec.field(default_factory=dict)


class PrepareRetrieveResponse(msgspec.Struct):
    """Op 18's response."""

    success: bool
    data: bytes = b""
    context: dict[str, Any] = msgspec.field(default_factory=dict)


class BlockAllocationRecord(msgspec.Struct):
    """One request's new blocks, reported by the scheduler (op 23)."""

    req_id: str
    new_block_ids: list[int]
    new_token_ids: list[int]


class KVEventRecord(msgspec.Struct):
    """One KV-event log record (§3.4)."""

    seq: int
    kind: str
    medium: str
    model_name: str
    block_hashes: list[bytes]
    parent_block_hash: bytes | None
    token_ids: list[int]


class KVEventBatch(msgspec.Struct):
    """One stream message of `subscribe_kv_events`."""

    enabled: bool
    incarnation: int
    next_cursor: int
    lost: bool
    events: list[KVEventRecord]


class TensorMetadata(msgspec.Struct, forbid_unknown_fields=True):
    """A registered tensor's dtype, physical shape, strides and offset (elements)."""

    dtype: str
    shape: list[int]
    stride: list[int]
    storage_offset: int = 0
    device_uuid: str = "cpu"

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.stride):
            raise ValueError("shape and stride differ in length")
        if min(self.shape, default=0) < 0 or min(self.stride, default=0) < 0 or self.storage_offset < 0:
            raise ValueError("negative shape, stride or offset")


class CpuShmDescriptor(msgspec.Struct, tag_field="type", tag="cpu_shm", forbid_unknown_fields=True):
    """A tensor in a POSIX SHM segment (§4.1)."""

    shm_name: str
    nbytes: int
    version: int
    metadata: TensorMetadata


class CudaDescriptor(msgspec.Struct, tag_field="type", tag="cuda", forbid_unknown_fields=True):
    """A PyTorch CUDA storage IPC handle."""

    handle: list[Any]
    version: int
    metadata: TensorMetadata


class CudaRawDescriptor(msgspec.Struct, tag_field="type", tag="cuda_raw", forbid_unknown_fields=True):
    """A driver `cudaIpcMemHandle_t` of the allocation."""

    ipc_handle: bytes
    alloc_offset: int
    nbytes: int
    version: int
    metadata: TensorMetadata


class CudaVmmDescriptor(msgspec.Struct, tag_field="type", tag="cuda_vmm", forbid_unknown_fields=True):
    """CUDA VMM memory."""

    export_id: bytes
    kind: str
    fabric_blob: bytes | None
    alloc_size: int
    alloc_offset: int
    nbytes: int
    version: int
    metadata: TensorMetadata


Descriptor = CpuShmDescriptor | CudaDescriptor | CudaRawDescriptor | CudaVmmDescriptor
IPC_EXT_CODE = 1
_descriptor_decoder = msgspec.msgpack.Decoder(Descriptor)
_encoder = msgspec.msgpack.Encoder()


def decode_descriptor(ext: msgspec.msgpack.Ext) -> Descriptor:
    """A `DeviceIPCWrapper` ext (code 1) to its descriptor; other codes are a decode error."""
    if ext.code != IPC_EXT_CODE:
        raise msgspec.ValidationError(f"IPC wrapper has ext code {ext.code}, expected {IPC_EXT_CODE}")
    descriptor: Descriptor = _descriptor_decoder.decode(ext.data)
    if descriptor.version != 1:
        raise msgspec.ValidationError(f"IPC descriptor version {descriptor.version} (expected 1)")
    return descriptor


def encode_descriptor(descriptor: Descriptor) -> msgspec.msgpack.Ext:
    """A descriptor wrapped as the ext-1 value clients send."""
    return msgspec.msgpack.Ext(IPC_EXT_CODE, _encoder.encode(descriptor))
