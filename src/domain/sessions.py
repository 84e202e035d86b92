"""Per-request sessions (wire-protocol.md §5.6): cached chunk hashes, the lookup and its prefetch result.

A session is created on first use by any op and expires `ttl_s` after creation. It keeps the request's
`HashChain` (so chunked prefill never rehashes; a token list seen under another request id comes from
the shared `DigestCache`), the last lookup's grid (model, ranks, groups, salt,
readers), the prefetch job (its result is handed over once) and lock bookkeeping: which chunks
`free_lookup_locks` already released and which ranks a failed retrieve already released, so no lock is
released twice.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from lmcache.domain.session_types import LookupGrid, PrefetchJob, Session

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.digest_cache import DigestCache, Scope
    from lmcache.domain.hashing import TokenHasher
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.ports.clock import Clock


class SessionManager:
    """Thread-safe table of sessions keyed by request_id.

    Args:
        l1: The L1 store whose locks the sessions release and whose LRU they touch.
        hasher: The chunk hasher (`--chunk-size`, `--hash-algorithm`).
        clock: Time source for expiry.
        ttl_s: Session lifetime after creation (`--session-ttl-seconds`).
        digests: Digests of token lists seen before, by their wire bytes (shared by the server's sessions).
    """

    def __init__(
        self,
        l1: L1Manager,
        hasher: TokenHasher,
        clock: Clock,
        ttl_s: float = 600.0,
        *,
        digests: DigestCache,
    ) -> None:
        self._l1 = l1
        self._hasher = hasher
        self._clock = clock
        self.clock = clock  # the engine times its requests on it
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.digests = digests

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def chunk_size(self) -> int:
        """Tokens per chunk."""
        return self._hasher.chunk_size

    def get(self, request_id: str) -> Session:
        """The session of `request_id`, created when absent."""
        with self._lock:
            session = self._sessions.get(request_id)
            if session is None:
                session = Session(request_id, self._clock.monotonic(), self._hasher.new_chain())
                self._sessions[request_id] = session
            return session

    def hashes(
        self,
        request_id: str,
        tokens: Sequence[int],
        start: int = 0,
        end: int | None = None,
        content: bytes | None = None,
        scope: Scope = ("", ""),
    ) -> list[bytes]:
        """Chunk digests of `[start, end)` for the request, from the session's or the shared cache.

        Args:
            request_id: The session.
            tokens: The request's whole token list.
            start: First token of the range.
            end: End of the range (default all tokens).
            content: The token list's wire bytes when the transport has them (enables the shared cache).
            scope: (model, cache_salt) of the request, the shared cache's partition.
        """
        session = self.get(request_id)
        with session.lock:
            stop = len(tokens) if end is None else end
            self._seed(session, tokens, stop, content, scope)
            return session.chain.hashes(tokens, start, stop, content)

    def _seed(
        self, session: Session, tokens: Sequence[int], end: int, content: bytes | None, scope: Scope
    ) -> None:
        """Seed the session's chain from the shared cache, or fill the cache from it (session.lock held)."""
        if content is None or not 0 <= end <= len(tokens):
            return
        chunks = end // self._hasher.chunk_size
        if session.chain.covers(content, chunks):
            return
        cached = self.digests.get(scope, content, chunks)
        if cached is not None:
            session.chain.seed(content, cached)
            return
        self.digests.put(scope, content, session.chain.hashes(tokens, 0, end, content))

    def begin_lookup(
        self,
        request_id: str,
        tokens: Sequence[int],
        end: int,
        grid: LookupGrid,
        content: bytes | None = None,
    ) -> list[bytes]:
        """Record a lookup: hash `tokens[0:end]`, remember its grid, reset lock bookkeeping, open a job.

        Args:
            request_id: The session.
            tokens: The request's token list.
            end: Tokens looked up.
            grid: Model, ranks, groups, salt and readers of the lookup.
            content: The token list's wire bytes (see `hashes`).

        Returns:
            The digests of the full chunks (empty when there is none: the job then finishes with 0).
        """
        session = self.get(request_id)
        with session.lock:
            self._seed(session, tokens, end, content, (grid.model_name, grid.cache_salt))
            digests = session.chain.hashes(tokens, 0, end, content)
            session.lookup = grid
            session.lookup_chunks = len(digests)
            session.hit_chunks = None
            session.freed_chunks = set()
            session.released_ranks = set()
            session.job = PrefetchJob()
            if not digests:
                session.job.set_result(0)
            return digests

    def job(self, request_id: str) -> PrefetchJob | None:
        """The pending or finished (unconsumed) prefetch job of the request."""
        with self._lock:
            session = self._sessions.get(request_id)
        return None if session is None else session.job

    def take_prefetch_result(self, request_id: str) -> int | None:
        """The hit count in chunks, handed over once; None while running; 0 when unknown or consumed."""
        with self._lock:
            session = self._sessions.get(request_id)
        if session is None:
            return 0
        with session.lock:
            return _consume(session)

    def free_lookup_locks(self, request_id: str, start: int, end: int) -> int:
        """Release the lookup's `num_kv_readers` locks on the chunks fully inside `[start, end)`.

        Only chunks below the consumed hit count, for every rank and object group, each chunk at most
        once. Nothing happens while the prefetch is running or when the session has no lookup result.

        Returns:
            Objects whose locks were released.
        """
        with self._lock:
            session = self._sessions.get(request_id)
        if session is None or start >= end:
            return 0
        with session.lock:
            if session.job is not None and _consume(session) is None:
                return 0  # still running: the locks expire by TTL
            grid = session.lookup
            if grid is None or session.hit_chunks is None:
                return 0
            size = self._hasher.chunk_size
            first, last = -(-start // size), min(end // size, session.hit_chunks)
            chunks = [i for i in range(first, last) if i not in session.freed_chunks]
            session.freed_chunks.update(chunks)
            digests = session.chain.hashes_cached(chunks)
            keys = grid.keys_for(digests)
        self._l1.unlock_read(keys, grid.num_kv_readers)
        return len(keys)

    def release_rank_once(self, request_id: str, kv_rank: int) -> int:
        """Release one lock per object of `kv_rank` over the lookup's hit, once per rank (failed retrieve)."""
        with self._lock:
            session = self._sessions.get(request_id)
        if session is None:
            return 0
        with session.lock:
            grid = session.lookup
            if grid is None or session.hit_chunks is None or kv_rank in session.released_ranks:
                return 0
            session.released_ranks.add(kv_rank)
            chunks = [i for i in range(session.hit_chunks) if i not in session.freed_chunks]
            keys = grid.keys_for(session.chain.hashes_cached(chunks), ranks=(kv_rank,))
        self._l1.unlock_read(keys, 1)
        return len(keys)

    def end_session(self, request_id: str) -> bool:
        """Drop the session and LRU-touch every object of its lookup's full chunks; locks stay as they are.

        Returns:
            False for an unknown request_id (a no-op).
        """
        with self._lock:
            session = self._sessions.pop(request_id, None)
        if session is None:
            return False
        with session.lock:
            grid = session.lookup
            if grid is not None:
                self._l1.touch(grid.keys_for(session.chain.hashes_cached(range(session.lookup_chunks))))
        return True

    def attach(self, request_id: str, instance_id: int) -> None:
        """Record that worker `instance_id` works on the request (its sessions end with it)."""
        session = self.get(request_id)
        if instance_id not in session.instances:
            with session.lock:
                session.instances.add(instance_id)

    def end_instance(self, instance_id: int) -> list[str]:
        """End the sessions a worker that is gone (reaped, unregistered) worked on; returns their ids.

        Without this they would stay until `ttl_s`, counted in `active_sessions`.
        """
        with self._lock:
            ended = [rid for rid, s in self._sessions.items() if instance_id in s.instances]
        for request_id in ended:
            self.end_session(request_id)
        return ended

    def expire(self) -> list[str]:
        """Drop sessions created more than `ttl_s` ago; returns their request ids (a supervised loop step)."""
        cutoff = self._clock.monotonic() - self.ttl_s
        with self._lock:
            old = [rid for rid, s in self._sessions.items() if s.created_at <= cutoff]
            for rid in old:
                del self._sessions[rid]
        return old


def _consume(session: Session) -> int | None:
    job = session.job
    if job is None:
        return 0
    if not job.done:
        return None
    session.job = None
    session.hit_chunks = job.result
    return job.result
