"""Per-request bookkeeping of the scheduler half: hits, locks, allocated blocks and what is stored.

Pure arithmetic over token counts and block ids, so it is unit-tested without vLLM or a server. Rules:
- Hits and transfers are whole chunks (the server's `--chunk-size`, a multiple of vLLM's block size).
- vLLM must compute at least one token, so the tokens offered for loading never reach the last token.
- The lookup read-locks the hit chunks; every locked chunk is released exactly once: by the retrieve that
  loads it, or by `free_lookup_locks` when vLLM already has it or does not load it.
- Stores cover newly full chunks whose KV vLLM has computed, prompt tokens only unless decode storing is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmcache.adapters.vllm.transfer_ops import LoadStoreOp

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ("AllocOutcome", "RequestTracker", "chunk_floor", "tokens_to_load")


def chunk_floor(tokens: int, chunk_size: int) -> int:
    """`tokens` rounded down to whole chunks."""
    return tokens - tokens % chunk_size


def tokens_to_load(hit_tokens: int, num_computed_tokens: int, num_tokens: int) -> int:
    """Tokens vLLM may take from the cache beyond its own `num_computed_tokens`, never its last token."""
    return max(0, min(hit_tokens, num_tokens - 1) - num_computed_tokens)


@dataclass(frozen=True, slots=True)
class AllocOutcome:
    """What `RequestTracker.on_alloc` decided: locks to free (`[0, free_end)`) and the load to run."""

    free_end: int
    load: LoadStoreOp | None


@dataclass(slots=True)
class RequestTracker:
    """One request as the scheduler half sees it.

    Attributes:
        request_id: vLLM's request id (also the server's session id).
        token_ids: The request's live token sequence (prompt, then generated tokens).
        num_prompt_tokens: Prompt length.
        cache_salt: The request's `cache_salt` ("" when none).
        cacheable: False for requests whose tokens do not identify their KV (prompt embeddings,
            multimodal inputs, LoRA) or whose salt the server would reject: never looked up or stored.
        hit_tokens: Chunk-aligned hit of the last lookup (None while unknown).
        local_tokens: vLLM's own prefix-cache hit when the lookup result was used.
        locked_end: `[0, locked_end)` is still read-locked by the lookup and must be released.
        allocated: update_state_after_alloc ran for the current lookup cycle.
        block_ids: The request's engine blocks, in token order.
        stored_end: `[0, stored_end)` is in the cache (hit or stored by us); stores continue from here.
        pending_load: The load decided at allocation, handed to the workers with the next plan.
        sent_ops: Any op naming this request reached the server (so its session needs ending).
    """

    request_id: str
    token_ids: Sequence[int]
    num_prompt_tokens: int
    cache_salt: str = ""
    cacheable: bool = True
    hit_tokens: int | None = None
    local_tokens: int = 0
    locked_end: int = 0
    allocated: bool = False
    block_ids: list[int] = field(default_factory=list)
    stored_end: int = 0
    pending_load: LoadStoreOp | None = None
    sent_ops: bool = False

    def lookup_end(self, chunk_size: int) -> int:
        """The lookup covers the full chunks of the tokens known now."""
        return chunk_floor(len(self.token_ids), chunk_size)

    def start_cycle(self) -> None:
        """A new lookup cycle (first admission or resumption after preemption): forget the last one."""
        self.hit_tokens = None
        self.local_tokens = 0
        self.locked_end = 0
        self.allocated = False
        self.pending_load = None

    def record_hit(self, hit_tokens: int, num_computed_tokens: int) -> int:
        """Keep the lookup's hit; return the tokens to offer vLLM (0 when nothing to load)."""
        self.hit_tokens = hit_tokens
        self.local_tokens = num_computed_tokens
        self.locked_end = hit_tokens
        self.stored_end = hit_tokens
        return tokens_to_load(hit_tokens, num_computed_tokens, len(self.token_ids))

    def set_blocks(self, block_ids: Iterable[int]) -> None:
        """All blocks of the request (vLLM hands over the full list on allocation and resumption)."""
        self.block_ids = list(block_ids)

    def add_blocks(self, block_ids: Iterable[int]) -> None:
        """Blocks appended by a later step."""
        self.block_ids.extend(block_ids)

    def on_alloc(self, num_external_tokens: int, chunk_size: int, block_size: int) -> AllocOutcome:
        """Decide the load once vLLM allocated blocks, and which locks to free right away.

        vLLM loads from its own hit rounded down to a chunk up to our hit; blocks vLLM already holds at the
        start of that range are skipped on retrieve. With nothing to load every locked chunk is freed.
        """
        if self.allocated:
            return AllocOutcome(0, None)
        self.allocated = True
        hit = self.hit_tokens or 0
        if num_external_tokens <= 0 or hit <= self.local_tokens:
            return AllocOutcome(self._free_all(), None)
        start = chunk_floor(self.local_tokens, chunk_size)
        first, last = start // block_size, hit // block_size
        if len(self.block_ids) < last:
            return AllocOutcome(self._free_all(), None)
        load = LoadStoreOp(
            block_ids=self.block_ids[first:last],
            token_ids=list(self.token_ids[:hit]),
            start=start,
            end=hit,
            skip_first_n_tokens=self.local_tokens - start,
        )
        self.pending_load = load
        # The retrieve releases the locks of [start, hit); everything before is vLLM's already.
        self.locked_end = 0
        return AllocOutcome(start, load)

    def _free_all(self) -> int:
        end, self.locked_end = self.locked_end, 0
        return end

    def take_locked_end(self) -> int:
        """Locks still held (e.g. a request aborted before allocation); they count as released afterwards."""
        return self._free_all()

    def take_load(self) -> LoadStoreOp | None:
        """The pending load, once."""
        load, self.pending_load = self.pending_load, None
        return load

    def next_store(
        self, computed_tokens: int, chunk_size: int, block_size: int, save_decode_cache: bool
    ) -> LoadStoreOp | None:
        """The newly full chunks after vLLM computed `computed_tokens` tokens, or None.

        Only tokens already in `token_ids` count (speculative tokens are not), and only prompt tokens
        unless `save_decode_cache`.
        """
        limit = min(computed_tokens, len(self.token_ids))
        if not save_decode_cache:
            limit = min(limit, self.num_prompt_tokens)
        end = min(chunk_floor(limit, chunk_size), chunk_floor(len(self.block_ids) * block_size, chunk_size))
        if end <= self.stored_end:
            return None
        start = self.stored_end
        self.stored_end = end
        return LoadStoreOp(
            block_ids=self.block_ids[start // block_size : end // block_size],
            token_ids=list(self.token_ids[:end]),
            start=start,
            end=end,
        )

    def forget_blocks_from(self, invalid_block_ids: set[int], chunk_size: int, block_size: int) -> bool:
        """A load into some of our blocks failed: what was stored from there on must be stored again.

        Returns True when this request owned one of the blocks.
        """
        owned = invalid_block_ids.intersection(self.block_ids)
        if not owned:
            return False
        first = min(self.block_ids.index(block) for block in owned)
        self.stored_end = min(self.stored_end, chunk_floor(first * block_size, chunk_size))
        return True
