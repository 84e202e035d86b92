"""Chunk bytes carried in engine-driven messages when there is no SHM pool (wire-protocol.md §5.11).

LMCache 0.5.6 workers send and expect a pickled `list` of CPU tensors. Unpickling arbitrary data runs
code, so we never call plain `pickle.loads`: a restricted unpickler accepts only the three globals a
pickled CPU tensor needs, and loads the inner storage with `torch.load(weights_only=True)`. Our own
client avoids pickle altogether: it sends `RAW_MAGIC` followed by the chunks' bytes back to back.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transfer.cpu_kv import torch_dtype

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
else:
    from lmcache.adapters.lazy_torch import torch

__all__ = ("RAW_MAGIC", "ChunkCodecError", "decode_chunks", "encode_chunks", "encode_raw")

RAW_MAGIC = b"LMCRAW01"


class ChunkCodecError(ValueError):
    """Chunk data that is neither raw nor a pickled list of CPU tensors of the registered size."""


def _load_storage(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


@functools.cache
def _allowed() -> dict[tuple[str, str], Any]:  # built on first use: torch loads after the ready line
    return {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }


class _TensorUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in chunk data") from None


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().view(-1).view(torch.uint8)
    return memoryview(flat.numpy().data).cast("B")


def decode_chunks(data: bytes, object_bytes: int) -> list[memoryview]:
    """Split message data into one view per chunk, each exactly `object_bytes` long."""
    if data.startswith(RAW_MAGIC):
        body = memoryview(data)[len(RAW_MAGIC) :]
        if body.nbytes % object_bytes:
            raise ChunkCodecError(
                f"raw chunk data of {body.nbytes} bytes is not a multiple of {object_bytes}"
            )
        return [body[i : i + object_bytes] for i in range(0, body.nbytes, object_bytes)]
    try:
        value = _TensorUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise ChunkCodecError(f"chunk data is neither raw nor a pickled tensor list: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(t, torch.Tensor) for t in value):
        raise ChunkCodecError("pickled chunk data must be a list of tensors")
    out = []
    for tensor in value:
        if tensor.device.type != "cpu" or tensor.numel() * tensor.element_size() != object_bytes:
            raise ChunkCodecError(f"a chunk tensor is not a CPU tensor of {object_bytes} bytes")
        out.append(_tensor_bytes(tensor))
    return out


def encode_chunks(chunks: Sequence[bytearray], shape: Sequence[int], dtype: str) -> bytes:
    """A pickled list of CPU tensors, as LMCache 0.5.6 workers unpickle it."""
    kind = torch_dtype(dtype)
    tensors = [torch.frombuffer(chunk, dtype=kind).view(*shape) for chunk in chunks]
    return pickle.dumps(tensors, protocol=4)


def encode_raw(chunks: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """Our clients' pickle-free form: the magic, then the chunks back to back."""
    return RAW_MAGIC + b"".join(chunks)
