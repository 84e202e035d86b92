"""The worker process's side of the wire (wire-protocol.md §8.1): registration, loads, stores, heartbeat.

Loads and stores are synchronous: `load` returns once the blocks hold the KV (on CPU the server's copy is
done when it replies), and `store` returns once the server copied the blocks, so vLLM may reuse them
right after. A load that fails, or is skipped because the server is down, puts its blocks on the error
list vLLM reads after the step (it then recomputes them); a store that fails is dropped with a warning.

The heartbeat starts with the first transfer and pings with our instance id; after an outage, or when a
reply shows the server no longer knows our registration, it registers again with the same id.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from lmcache.adapters.vllm.adapter_base import AdapterBase
from lmcache.adapters.vllm.config import resolve_transfer_mode, server_ops
from lmcache.adapters.vllm.heartbeat import Heartbeat
from lmcache.adapters.vllm.kv_tensors import physical
from lmcache.adapters.vllm.server_copies import LmcacheDrivenPath
from lmcache.adapters.vllm.transfer_base import Outcome, Waiter
from lmcache.adapters.vllm.transfer_ops import RequestOp
from lmcache.adapters.vllm.worker_copies import EngineDrivenPath

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.transport.wire_types import CacheKey
    from lmcache.adapters.vllm.config import TransferMode
    from lmcache.adapters.vllm.transfer_base import KVTransferPath
    from lmcache.adapters.vllm.transfer_ops import LoadStoreOp, ParallelStrategy

__all__ = ("LMCacheMPWorkerAdapter",)

logger = logging.getLogger("lmcache.vllm.worker")


def _request_ops(request_ids: list[str], ops: list[LoadStoreOp], salts: list[str] | None) -> list[RequestOp]:
    """The parallel lists of vLLM's built-in connector as `RequestOp`s (no salts: the default salt)."""
    return [RequestOp(r, op, s) for r, op, s in zip(request_ids, ops, salts or [""] * len(ops), strict=True)]


class LMCacheMPWorkerAdapter(AdapterBase):
    """KV registration and transfers of one vLLM worker against one server.

    Args:
        server_url: `tcp://host:port`.
        context: Accepted for vLLM's call signature; our client owns its ZMQ context.
        model_name: Model name in every key.
        vllm_block_size: Tokens per vLLM block.
        parallel_strategy: KV world size and rank.
        mq_timeout: Timeout of blocking calls (registration, each transfer reply).
        heartbeat_interval: Seconds between pings once transfers started.
        transfer_mode: `auto`, `lmcache_driven` or `engine_driven` (see `config`).
        client: A client to use instead of connecting to `server_url` (tests).
    """

    def __init__(
        self,
        server_url: str,
        context: object | None = None,
        model_name: str = "",
        vllm_block_size: int = 16,
        parallel_strategy: ParallelStrategy | None = None,
        mq_timeout: float = 300.0,
        heartbeat_interval: float = 10.0,
        transfer_mode: TransferMode = "auto",
        client: LMCacheClient | None = None,
    ) -> None:
        super().__init__(server_url, model_name, vllm_block_size, parallel_strategy, mq_timeout, client)
        self.transfer_mode: TransferMode = transfer_mode
        self.instance_id = uuid.uuid4().int & ((1 << 63) - 1)
        self.heartbeat = Heartbeat(
            lambda timeout_s: self.client.call("ping", self.instance_id, timeout_s=timeout_s),
            heartbeat_interval,
            self._reregister,
            name="lmcache-worker-heartbeat",
        )
        self.wait = Waiter(mq_timeout, lambda: self.heartbeat.healthy)
        self.path: KVTransferPath | None = None
        self._lock = threading.RLock()
        self._load_errors: set[int] = set()
        self._done_loads: set[str] = set()
        logger.info("LMCache MP worker adapter created with instance_id=%d", self.instance_id)

    # ------------------------------------------------------------ properties
    @property
    def worker_id(self) -> int:
        """KV rank of our keys."""
        return self.parallel_strategy.kv_worker_id

    @property
    def use_mla(self) -> bool:
        """Whether the model uses MLA."""
        return self.parallel_strategy.use_mla

    @property
    def is_first_rank_of_pp_group(self) -> bool:
        """Whether this worker writes (MLA: only the first TP rank)."""
        return self.parallel_strategy.is_kv_writer

    # ---------------------------------------------------------- registration
    def register_kv_caches(
        self, kv_caches: dict[str, torch.Tensor], layout_hints: dict[str, Any] | None = None
    ) -> None:
        """Register the KV tensors (layer order = dict order) in the configured transfer mode.

        Raises:
            ConnectionError: The server did not answer within `mq_timeout`.
            RegistrationRejectedError: The server did not accept the registration.
        """
        tensors = list(kv_caches.values())
        if not tensors:
            raise ValueError("vLLM registered no KV cache tensors")
        devices = {t.device.type for t in tensors}
        if len(devices) != 1:
            raise ValueError(f"KV cache tensors are on several device types: {sorted(devices)}")
        device = devices.pop()
        mode = resolve_transfer_mode(self.transfer_mode, device)
        logger.info("Creating transfer context (device_type=%s, mode=%s)", device, mode)
        hints = dict(layout_hints or {})
        ordered = [physical(t) for t in tensors]
        path: KVTransferPath
        if server_ops(mode) == "engine_driven":  # the worker copies, through the server's pool
            path = EngineDrivenPath(
                self.client,
                self.instance_id,
                self.model_name,
                self.world_size,
                ordered,
                hints,
                self.block_size,
                self.chunk_size,
                self.wait,
            )
        else:
            path = LmcacheDrivenPath(
                self.client,
                self.instance_id,
                self.model_name,
                self.world_size,
                tensors,
                hints,
                self.block_size,
                self.wait,
            )
        try:
            path.register()
        except TimeoutError:
            path.close()
            raise ConnectionError(
                f"LMCache server at {self.client.url} did not answer the KV cache registration within "
                f"{self.mq_timeout:g}s (lmcache.mp.mq_timeout). Is the server running?"
            ) from None
        except Exception:
            path.close()
            raise
        with self._lock:
            self.path = path
        logger.info("Registered %d KV cache layers with the LMCache server (%s)", len(tensors), mode)

    def _reregister(self) -> bool:
        """Heartbeat recovery: register again with the same instance id."""
        with self._lock:
            if self.path is None:
                return True
            try:
                self.path.register()
            except Exception as exc:
                logger.warning(
                    "Re-registering the KV caches failed (%s); retrying at the next heartbeat", exc
                )
                return False
        logger.warning("Re-registered the KV caches with the LMCache server after it lost them")
        return True

    # ------------------------------------------------------------- transfers
    def _key(self, request_id: str, op: LoadStoreOp, cache_salt: str) -> CacheKey:
        tokens = list(op.token_ids or ())[: op.end]
        return self._cache_key(self.worker_id, tokens, op.start, op.end, request_id, cache_salt, None)

    def _after(self, outcomes: Sequence[Outcome]) -> None:
        if Outcome.UNKNOWN_INSTANCE in outcomes:
            self.heartbeat.request_recovery()

    def load(self, ops: Sequence[RequestOp]) -> None:
        """Retrieve each op's blocks; the failed ones go on the load-error list."""
        if not ops:
            return
        self.heartbeat.start()
        outcomes = [Outcome.FAILED] * len(ops)
        with self._lock:
            path = self.path
            if path is not None and self.heartbeat.healthy:
                try:
                    keys = [
                        (
                            self._key(r.request_id, r.op, r.cache_salt),
                            list(r.op.block_ids),
                            r.op.skip_first_n_tokens,
                        )
                        for r in ops
                    ]
                    outcomes = path.retrieve(keys)
                except Exception:
                    logger.exception("LMCache loads failed; vLLM recomputes them")
        for request, outcome in zip(ops, outcomes, strict=True):
            if outcome is not Outcome.OK:
                skip_blocks = request.op.skip_first_n_tokens // self.block_size
                self._load_errors.update(request.op.block_ids[skip_blocks:])
                logger.warning(
                    "Loading %d tokens of request %s from LMCache failed; vLLM recomputes them",
                    request.op.end - request.op.start,
                    request.request_id,
                )
        self._after(outcomes)

    def store(self, ops: Sequence[RequestOp]) -> None:
        """Store each op's chunks; failures are logged and dropped."""
        if not ops or not self.parallel_strategy.is_kv_writer:
            return
        self.heartbeat.start()
        with self._lock:
            path = self.path
            if path is None or not self.heartbeat.healthy:
                return
            try:
                outcomes = self._store_on(path, ops)
            except Exception:
                logger.exception("LMCache stores failed; dropped")
                return
        failed = sum(outcome is not Outcome.OK for outcome in outcomes)
        if failed:
            logger.warning("%d of %d LMCache stores failed this step", failed, len(outcomes))
        self._after(outcomes)

    def _store_on(self, path: KVTransferPath, ops: Sequence[RequestOp]) -> list[Outcome]:
        keys = [(self._key(r.request_id, r.op, r.cache_salt), list(r.op.block_ids)) for r in ops]
        outcomes = path.store(keys)
        lost = [i for i, outcome in enumerate(outcomes) if outcome is Outcome.UNKNOWN_INSTANCE]
        if lost and self._reregister():
            # The server restarted between two heartbeats: registered again, the stores go through.
            for i, outcome in zip(lost, path.store([keys[i] for i in lost]), strict=True):
                outcomes[i] = outcome
        return outcomes

    def take_load_errors(self) -> set[int]:
        """Blocks whose load failed since the last call."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    # ---------------------------------------- vLLM's built-in connector API
    def batched_submit_retrieve_requests(
        self,
        request_ids: list[str],
        ops: list[LoadStoreOp],
        event: object = None,
        cache_salts: list[str] | None = None,
    ) -> None:
        """The load call of vLLM's built-in connector (synchronous here)."""
        self.load(_request_ops(request_ids, ops, cache_salts))
        self._done_loads.update(request_ids)

    def batched_submit_store_requests(
        self,
        request_ids: list[str],
        ops: list[LoadStoreOp],
        event: object = None,
        cache_salts: list[str] | None = None,
    ) -> None:
        """The store call of vLLM's built-in connector (synchronous here)."""
        self.store(_request_ops(request_ids, ops, cache_salts))

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Stores finish before `store` returns, so every finished request is done sending."""
        loads, self._done_loads = self._done_loads, set()
        return set(finished_req_ids), loads

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Same as `take_load_errors`."""
        return self.take_load_errors()

    def shutdown(self) -> None:
        """Stop the heartbeat, unregister, release mappings and segment names, close the socket."""
        self.heartbeat.stop()
        with self._lock:
            path, self.path = self.path, None
        if path is not None:
            if self.heartbeat.healthy:
                try:
                    path.unregister()
                except Exception as exc:
                    logger.debug("unregister at shutdown: %s", exc)
            path.close()
        self.client.close()
