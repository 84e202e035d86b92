"""The scheduler process's side of the wire (wire-protocol.md §8.1): lookups, lock release, sessions.

It never waits on the scheduler thread after start-up: a `lookup` is sent once per request, and only after
its reply arrives is `query_prefetch_status` sent, one at a time (a `None` answer is asked again at the next
scheduler step). Replies are handled on the client's I/O thread through future callbacks. A lookup that
gets no answer within `mq_timeout`, or any lookup while the heartbeat says the server is down, counts as a
miss, so requests never wait on a dead server.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmcache.adapters.transport.wire_types import BlockAllocationRecord, CacheKey
from lmcache.adapters.vllm.adapter_base import AdapterBase
from lmcache.adapters.vllm.heartbeat import Heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Future

    from lmcache.adapters.transport.client import LMCacheClient
    from lmcache.adapters.vllm.transfer_ops import ParallelStrategy

__all__ = ("LMCacheMPSchedulerAdapter",)

logger = logging.getLogger("lmcache.vllm.scheduler")


def _after(future: Future[Any], then: Callable[[Any], None]) -> None:
    """Run `then(result)` when `future` resolves (None on failure), on whichever thread resolves it."""

    def done(f: Future[Any]) -> None:
        try:
            result = f.result()
        except Exception as exc:
            logger.debug("LMCache call failed: %s", exc)
            result = None
        then(result)

    future.add_done_callback(done)


@dataclass(slots=True)
class _Lookup:
    """One request's lookup: `hit` in tokens once known; `polling` while a status call is out."""

    sent_at: float
    replied: bool = False
    polling: bool = False
    hit: int | None = None
    abandoned: bool = False
    outstanding: Future[Any] | None = None


class LMCacheMPSchedulerAdapter(AdapterBase):
    """Lookups and session bookkeeping against one server, for vLLM's scheduler process.

    Args:
        server_url: `tcp://host:port`.
        context: Accepted for vLLM's call signature; our client owns its ZMQ context.
        model_name: Model name in every key.
        vllm_block_size: vLLM's block size (the chunk size must be a multiple).
        parallel_strategy: World size, readers per object.
        mq_timeout: Start-up and blocking-call timeout (seconds).
        heartbeat_interval: Seconds between `ping(None)`s, from the first lookup on.
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
        client: LMCacheClient | None = None,
    ) -> None:
        super().__init__(server_url, model_name, vllm_block_size, parallel_strategy, mq_timeout, client)
        self._lookups: dict[str, _Lookup] = {}
        self._lock = threading.Lock()
        self.heartbeat = Heartbeat(
            lambda timeout_s: self.client.call("ping", None, timeout_s=timeout_s),
            heartbeat_interval,
            name="lmcache-scheduler-heartbeat",
        )

    # ------------------------------------------------------------------ keys
    @property
    def tp_size(self) -> int:
        """Tensor-parallel size (sent with lookups; the server ignores it)."""
        return self.parallel_strategy.tp_size

    def _key(
        self,
        token_ids: Sequence[int],
        start: int,
        end: int,
        request_id: str,
        cache_salt: str = "",
        request_configs: dict[str, Any] | None = None,
    ) -> CacheKey:
        return self._cache_key(
            None, list(token_ids[:end]), start, end, request_id, cache_salt, request_configs
        )

    # --------------------------------------------------------------- lookups
    def maybe_submit_lookup_request(
        self,
        request_id: str,
        token_ids: Sequence[int],
        cache_salt: str = "",
        request_configs: dict[str, Any] | None = None,
    ) -> None:
        """Send a lookup of the full chunks of `token_ids` unless one is out for this request."""
        with self._lock:
            if request_id in self._lookups:
                return
            end = len(token_ids) - len(token_ids) % self.chunk_size
            entry = _Lookup(time.monotonic())
            self._lookups[request_id] = entry
            if end == 0 or not self.heartbeat.healthy:
                entry.replied, entry.hit = True, 0
                return
        self.heartbeat.start()
        key = self._key(token_ids, 0, end, request_id, cache_salt, request_configs)
        entry.outstanding = self.client.call_async("lookup", key, self.tp_size)
        _after(entry.outstanding, lambda _: self._on_lookup_reply(entry, request_id))

    def _on_lookup_reply(self, entry: _Lookup, request_id: str) -> None:
        with self._lock:
            entry.replied = True
            if entry.abandoned or entry.hit is not None:
                return
            entry.polling = True
        self._poll(entry, request_id)

    def _poll(self, entry: _Lookup, request_id: str) -> None:
        entry.outstanding = self.client.call_async("query_prefetch_status", request_id)
        _after(entry.outstanding, lambda result: self._on_status(entry, result))

    def _on_status(self, entry: _Lookup, result: object) -> None:
        with self._lock:
            entry.polling = False
            if entry.hit is None and isinstance(result, int) and not isinstance(result, bool):
                entry.hit = self._tokens(max(0, result))

    def check_lookup_result(self, request_id: str) -> int | None:
        """The hit in tokens, or None while the server is still looking (ask again next step)."""
        with self._lock:
            entry = self._lookups.get(request_id)
            if entry is None:
                return 0
            if entry.hit is not None:
                return entry.hit
            overdue = time.monotonic() - entry.sent_at > self.mq_timeout
            if overdue or not self.heartbeat.healthy:
                logger.warning("Lookup of request %s got no answer; treating it as a miss", request_id)
                entry.hit, entry.abandoned = 0, True
                return 0
            if not entry.replied or entry.polling:
                return None
            entry.polling = True
        self._poll(entry, request_id)
        return None

    def cleanup_lookup_result(self, request_id: str) -> None:
        """Forget a request's lookup state."""
        with self._lock:
            self._lookups.pop(request_id, None)

    # ------------------------------------------------------- locks, sessions
    def free_lookup_locks(
        self,
        token_ids: Sequence[int],
        start: int,
        end: int,
        request_id: str,
        cache_salt: str = "",
        then: Callable[[], None] | None = None,
    ) -> None:
        """Release the lookup's read locks on `[start, end)`; `then` runs after the reply."""
        if end <= start:
            if then is not None:
                then()
            return
        key = self._key(token_ids, start, end, request_id, cache_salt)
        future = self.client.call_async("free_lookup_locks", key, self.tp_size)
        if then is not None:
            _after(future, lambda _: then())

    def end_session(self, request_id: str) -> None:
        """Drop the server's session of a finished request (fire and forget)."""
        self.client.call_async("end_session", request_id)

    def finish_request(
        self, request_id: str, token_ids: Sequence[int], locked_end: int, cache_salt: str = ""
    ) -> None:
        """A request finished: release what its lookup still locks, then end its session.

        A lookup still in flight is drained first (its result says which chunks it locked).
        """
        with self._lock:
            entry = self._lookups.pop(request_id, None)
            pending = entry is not None and entry.hit is None and not entry.abandoned
            if entry is not None:
                entry.abandoned = True
        if entry is None or not pending:
            self._release(request_id, list(token_ids), locked_end, cache_salt)
            return
        tokens = list(token_ids)

        def drain(_: object = None) -> None:
            if entry.hit is not None:  # the outstanding status poll answered
                self._release(request_id, tokens, entry.hit, cache_salt)
                return
            wait = self.client.call_async("wait_prefetch_status", request_id, min(self.mq_timeout, 30.0))
            _after(wait, lambda result: self._release(request_id, tokens, self._tokens(result), cache_salt))

        outstanding = entry.outstanding
        if outstanding is not None and not outstanding.done():
            _after(outstanding, drain)
        else:
            drain()

    def _tokens(self, chunks: object) -> int:
        return chunks * self.chunk_size if isinstance(chunks, int) and not isinstance(chunks, bool) else 0

    def _release(self, request_id: str, tokens: list[int], locked_end: int, cache_salt: str) -> None:
        self.free_lookup_locks(
            tokens, 0, locked_end, request_id, cache_salt, lambda: self.end_session(request_id)
        )

    def report_block_allocations(self, records: Sequence[Any]) -> None:
        """Observability records of newly allocated blocks (fire and forget)."""
        items = [
            r
            if isinstance(r, BlockAllocationRecord)
            else BlockAllocationRecord(str(r.req_id), list(r.new_block_ids), list(r.new_token_ids))
            for r in records
        ]
        if items:
            from os import getpid

            self.client.call_async("report_block_allocation", getpid(), self.model_name, items)

    def reset_cache(self) -> bool:
        """`clear(False)`: drop the server's unlocked L1 objects; False when the server did not answer."""
        try:
            self.client.call("clear", False, timeout_s=min(self.mq_timeout, 30.0))
        except TimeoutError:
            logger.warning("LMCache server did not answer clear(); its cache was not reset")
            return False
        return True

    def shutdown(self) -> None:
        """Stop the heartbeat and close the socket."""
        self.heartbeat.stop()
        self.client.close()
