# ruff: noqa: D102  (each handler is the op of the same name in wire-protocol.md §2/§5)
"""Op handlers: decoded payloads in, response values out (wire-protocol.md §5).

Each handler returns the op's response (None for void ops); raising anything makes the server reply
with the op's failure value and count the error. CPU-host events are stubs: a processed store or
retrieve answers `b"stub_ipc_handle"`, one rejected before any work `b""` (§4.4).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transfer.chunk_codec import decode_chunks, encode_chunks
from lmcache.adapters.transport.wire_tokens import WireTokens
from lmcache.adapters.transport.wire_types import (
    PrepareRetrieveResponse,
    PrepareStoreResponse,
    RegisterEngineDrivenContextResponse,
    decode_descriptor,
)
from lmcache.domain.cache_engine import RequestError, RequestKey
from lmcache.domain.kv_layout import EngineDrivenLayout

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.adapters.transfer.cpu_registration import CpuRegistrar
    from lmcache.adapters.transport.wire_types import CacheKey, RegisterEngineDrivenContextPayload
    from lmcache.domain.cache_engine import CacheEngine, TransferOutcome
    from lmcache.domain.engine_driven import EngineDrivenService, PoolSlots

__all__ = ("EVENT_HANDLE", "OpHandlers")

EVENT_HANDLE = b"stub_ipc_handle"
logger = logging.getLogger("lmcache.handlers")


def request_key(key: CacheKey) -> RequestKey:
    """The engine's view of a wire key (with the token list's wire bytes when the server decoded it)."""
    tokens = key.token_ids
    return RequestKey(
        key.model_name,
        key.world_size,
        key.worker_id,
        tokens,
        key.start,
        key.end,
        key.request_id,
        key.cache_salt,
        key.num_kv_readers,
        tokens.content if isinstance(tokens, WireTokens) else None,
    )


def _reply(outcome: TransferOutcome) -> tuple[bytes, bool]:
    return (EVENT_HANDLE if outcome.processed else b"", outcome.ok)


class OpHandlers:
    """The handler table for one server.

    Args:
        engine: The cache engine.
        registrar: CPU `register_kv_cache`.
        engine_driven: The engine-driven service (None when that mode is off).
        experimental: Capability strings of `get_experimental`.
        on_unregister: Called with an instance id after it was unregistered (closes its KV-event stream).
    """

    def __init__(
        self,
        engine: CacheEngine,
        registrar: CpuRegistrar,
        engine_driven: EngineDrivenService | None,
        experimental: list[str],
        on_unregister: Callable[[int], None] | None = None,
        lmcache_driven: bool = True,
    ) -> None:
        self.engine = engine
        self.registrar = registrar
        self.engine_driven = engine_driven
        self.experimental = experimental
        self._on_unregister = on_unregister
        self.lmcache_driven = lmcache_driven
        self.table: dict[str, Callable[..., Any]] = {
            name: getattr(self, name)
            for name in (
                "register_kv_cache",
                "unregister_kv_cache",
                "store",
                "retrieve",
                "lookup",
                "query_prefetch_status",
                "wait_prefetch_status",
                "free_lookup_locks",
                "end_session",
                "register_kv_cache_engine_driven_context",
                "unregister_kv_cache_engine_driven_context",
                "prepare_store",
                "commit_store",
                "prepare_retrieve",
                "commit_retrieve",
                "clear",
                "get_chunk_size",
                "ping",
                "report_block_allocation",
                "noop",
                "get_experimental",
            )
        }

    # ------------------------------------------------------------ registration
    def register_kv_cache(
        self,
        instance_id: int,
        wrappers: list[Any],
        model_name: str,
        world_size: int,
        engine_type: str,
        hints: dict[str, Any],
        groups: list[Any],
    ) -> None:
        try:
            if not self.lmcache_driven:
                raise RequestError(
                    "lmcache-driven transfers are disabled (--supported-transfer-mode engine_driven)"
                )
            descriptors = [decode_descriptor(w) for w in wrappers]
            if self.registrar.replaces(instance_id, descriptors, model_name):
                logger.warning(
                    "Instance %d registered new KV memory under its id; dropping the old registration",
                    instance_id,
                )
                self.unregister_kv_cache(instance_id)
            self.registrar.register(
                instance_id, descriptors, model_name, world_size, engine_type, hints, groups
            )
        except Exception as exc:
            self.engine.workers.mark_failed(instance_id, str(exc))
            logger.error("Registration of instance %d failed: %s", instance_id, exc)
            raise

    def unregister_kv_cache(self, instance_id: int) -> None:
        worker = self.engine.workers.remove(instance_id)
        if worker is not None:
            self.registrar.release(worker)
            logger.info("Unregistered KV cache of instance %d", instance_id)
        if self._on_unregister is not None:
            self._on_unregister(instance_id)

    # ---------------------------------------------------------------- transfer
    def store(
        self, key: CacheKey, instance_id: int, block_ids: list[list[int]], event: bytes
    ) -> tuple[bytes, bool]:
        return _reply(self.engine.store(request_key(key), instance_id, block_ids))

    def retrieve(
        self, key: CacheKey, instance_id: int, block_ids: list[list[int]], event: bytes, skip: int
    ) -> tuple[bytes, bool]:
        return _reply(self.engine.retrieve(request_key(key), instance_id, block_ids, skip))

    # ----------------------------------------------------------------- lookups
    def lookup(self, key: CacheKey, tp_size: int) -> None:
        self.engine.lookup(request_key(key))

    def query_prefetch_status(self, request_id: str) -> int | None:
        return self.engine.query(request_id)

    def wait_prefetch_status(self, request_id: str, timeout_s: float) -> int | None:
        return self.engine.wait(request_id, min(timeout_s, 300.0))

    def free_lookup_locks(self, key: CacheKey, tp_size: int) -> None:
        self.engine.free_lookup_locks(request_key(key))

    def end_session(self, request_id: str) -> None:
        self.engine.end_session(request_id)

    # ----------------------------------------------------------- engine-driven
    def _ed(self) -> EngineDrivenService:
        if self.engine_driven is None:
            raise RequestError("engine-driven transfers are disabled (--supported-transfer-mode)")
        return self.engine_driven

    def register_kv_cache_engine_driven_context(
        self, p: RegisterEngineDrivenContextPayload
    ) -> RegisterEngineDrivenContextResponse:
        name, size = self._ed().register(
            p.instance_id,
            p.model_name,
            p.world_size,
            p.block_size,
            p.num_layers,
            p.hidden_dim_size,
            p.dtype_str,
            p.use_mla,
            p.num_physical_slots,
        )
        logger.info("Registered KV cache for GPU ID %d with %d layers", p.instance_id, p.num_layers)
        return RegisterEngineDrivenContextResponse(name, size)

    def unregister_kv_cache_engine_driven_context(self, instance_id: int) -> None:
        self._ed().unregister(instance_id)
        if self._on_unregister is not None:
            self._on_unregister(instance_id)

    def _ed_layout(self, instance_id: int) -> EngineDrivenLayout:
        worker = self._ed().engine.workers.get(instance_id, touch=False)
        if worker is None or not isinstance(worker.layout, EngineDrivenLayout):
            raise RequestError(f"instance {instance_id} has no engine-driven registration")
        return worker.layout

    def _slots(self, instance_id: int, slots: PoolSlots) -> list[dict[str, Any]]:
        """The wire's slot dictionaries (§5.11) of pool extents."""
        layout = self._ed_layout(instance_id)
        size, shape, dtype = layout.object_bytes, layout.shape, layout.dtype
        return [{"offset": e.offset, "length": size, "shape": shape, "dtype": dtype} for e in slots.extents]

    def prepare_store(self, key: CacheKey, instance_id: int) -> PrepareStoreResponse:
        slots = self._ed().prepare_store(request_key(key), instance_id)
        if slots is None:
            return PrepareStoreResponse({})
        context = {"slots": self._slots(instance_id, slots), "chunk_indices": list(slots.chunk_indices)}
        return PrepareStoreResponse(context)

    def commit_store(self, key: CacheKey, instance_id: int, data: bytes) -> bool:
        ed = self._ed()
        rkey = request_key(key)
        if not data:
            return ed.commit_store(rkey, instance_id, None)
        worker = ed.engine.workers.get(instance_id)
        if worker is None or worker.kind != "engine_driven":
            raise RequestError(f"instance {instance_id} has no engine-driven registration")
        chunks = decode_chunks(data, worker.layout.object_bytes)
        return ed.commit_store(rkey, instance_id, chunks)

    def prepare_retrieve(self, key: CacheKey, instance_id: int) -> PrepareRetrieveResponse:
        answer = self._ed().prepare_retrieve(request_key(key), instance_id)
        if not answer.ok:
            return PrepareRetrieveResponse(False)
        if answer.slots is not None:
            return PrepareRetrieveResponse(True, b"", {"slots": self._slots(instance_id, answer.slots)})
        layout = self._ed_layout(instance_id)
        return PrepareRetrieveResponse(
            True, encode_chunks(list(answer.chunks), layout.shape, layout.dtype), {}
        )

    def commit_retrieve(self, key: CacheKey, instance_id: int) -> bool:
        return self._ed().commit_retrieve(request_key(key), instance_id)

    # ------------------------------------------------------------------- misc
    def clear(self, force: bool) -> None:
        self.engine.clear(force)

    def get_chunk_size(self) -> int:
        return self.engine.chunk_size

    def ping(self, instance_id: int | None) -> bool:
        if instance_id is not None:
            self.engine.workers.ping(instance_id)
        return True

    def report_block_allocation(self, instance_id: int, model_name: str, records: list[Any]) -> None:
        logger.debug(
            "Block allocation report from %d for %s: %d requests", instance_id, model_name, len(records)
        )

    def noop(self) -> str:
        return "OK"

    def get_experimental(self) -> list[str]:
        return list(self.experimental)
