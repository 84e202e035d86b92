"""Chunk digests of recently seen token lists, so a prompt sent again is not unpacked and rehashed.

Engines look the same prompt up several times under different request ids (a cold lookup, then the
warm one; retries; many users with one system prompt). The transport hands over the token list's exact
wire bytes as its identity (`RequestKey.token_content`); equal bytes mean equal tokens, so a hit is exact,
never a probabilistic match. Entries are scoped by (model, cache_salt): one tenant's lookups cannot
warm, and so time-probe, another's. Bounded by bytes and entries, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ("DigestCache", "Scope")

Scope = tuple[str, str]
_ENTRY_OVERHEAD = 200  # dict slot, tuple, list and bytes headers, roughly


class DigestCache:
    """Thread-safe LRU of `(scope, content) -> digests of the leading full chunks`.

    Args:
        max_bytes: Bound on the contents and digests held (0 disables the cache).
        max_entries: Bound on the number of token lists.
    """

    def __init__(self, max_bytes: int = 32 << 20, max_entries: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Scope, bytes], tuple[bytes, ...]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes accounted to the entries held."""
        return self._bytes

    def get(self, scope: Scope, content: bytes, chunks: int) -> list[bytes] | None:
        """The digests of the first `chunks` chunks, or None when not cached that far."""
        with self._lock:
            digests = self._entries.get((scope, content))
            if digests is None or len(digests) < chunks:
                self.misses += 1
                return None
            self._entries.move_to_end((scope, content))
            self.hits += 1
        return list(digests[:chunks])

    def put(self, scope: Scope, content: bytes, digests: list[bytes]) -> None:
        """Remember the digests of the token list whose wire bytes are `content`."""
        size = _size(content, digests)
        if not digests or size > self.max_bytes or self.max_entries < 1:
            return
        key = (scope, content)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _size(content, old)
            self._entries[key] = tuple(digests)
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                (_, dropped_content), dropped = self._entries.popitem(last=False)
                self._bytes -= _size(dropped_content, dropped)


def _size(content: bytes, digests: tuple[bytes, ...] | list[bytes]) -> int:
    return len(content) + sum(len(d) for d in digests) + _ENTRY_OVERHEAD
