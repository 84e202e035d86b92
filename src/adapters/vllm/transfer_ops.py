"""Plain values the scheduler half hands to the worker half each step, and the parallel layout of a worker.

They are picklable (vLLM ships connector metadata to worker processes) and import neither vLLM nor torch.
`LoadStoreOp` and `ParallelStrategy` keep the constructor signatures vLLM's built-in MP connector uses, so
vLLM can import them from `lmcache.integration.vllm.vllm_multi_process_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("ConnectorPlan", "LoadStoreOp", "ParallelStrategy", "RequestOp")


@dataclass(slots=True)
class ParallelStrategy:
    """Where this vLLM process sits: the key's `world_size`/`worker_id` and who reads and writes objects.

    For MLA models every tensor-parallel rank holds the same KV, so the KV world excludes TP
    (`kv_world_size = world_size // tp_size`), all TP ranks read the same objects and only the first rank of
    each TP group writes them.
    """

    use_mla: bool
    kv_world_size: int
    kv_worker_id: int
    actual_world_size: int
    actual_worker_id: int
    tp_size: int
    pp_size: int

    @classmethod
    def build(cls, use_mla: bool, world_size: int, rank: int, tp_size: int, pp_size: int) -> ParallelStrategy:
        """The strategy of rank `rank` of `world_size` (TP x PP) processes."""
        tp = max(1, tp_size)
        if use_mla:
            return cls(True, max(1, world_size // tp), rank // tp, world_size, rank, tp, pp_size)
        return cls(False, world_size, rank, world_size, rank, tp, pp_size)

    @property
    def num_kv_readers(self) -> int:
        """Read locks a lookup takes per object: one per worker that will retrieve it."""
        return self.tp_size if self.use_mla else 1

    @property
    def is_kv_writer(self) -> bool:
        """Whether this worker stores (MLA: only the first rank of its TP group)."""
        return not self.use_mla or self.actual_worker_id % self.tp_size == 0


@dataclass(slots=True)
class LoadStoreOp:
    """One contiguous, chunk-aligned token range `[start, end)` of a request and the engine blocks it spans.

    `token_ids` is the request's sequence from token 0 (at least up to `end`): the server hashes the chain
    from the first chunk. `skip_first_n_tokens` (retrieve only) leaves the first blocks of the range alone
    because vLLM's prefix cache already holds them.
    """

    block_ids: list[int]
    token_ids: list[int] | None = None
    start: int = 0
    end: int = 0
    skip_first_n_tokens: int = 0

    def __len__(self) -> int:
        return len(self.block_ids)


@dataclass(slots=True)
class RequestOp:
    """A load or store of one request."""

    request_id: str
    op: LoadStoreOp
    cache_salt: str = ""


@dataclass(slots=True)
class ConnectorPlan:
    """One step's work for the workers: loads run before the forward pass, stores after it."""

    loads: list[RequestOp] = field(default_factory=list)
    stores: list[RequestOp] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loads) + len(self.stores)
