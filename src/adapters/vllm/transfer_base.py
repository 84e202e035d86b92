"""What both worker transfer paths share: outcomes, the reply waiter and the path protocol."""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Future

    from lmcache.adapters.transport.wire_types import CacheKey

__all__ = ("KVTransferPath", "Outcome", "RegistrationRejectedError", "Waiter")

EVENT_STUB = b"stub_ipc_handle"


class RegistrationRejectedError(RuntimeError):
    """The server did not accept our KV cache registration; the message says what to change."""


class Outcome(enum.Enum):
    """How one store or retrieve ended."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN_INSTANCE = "unknown_instance"  # the server does not know our registration: register again


class Waiter:
    """Waits for replies in short slices, giving up early once the heartbeat says the server is down.

    Args:
        timeout_s: Longest wait for one reply.
        healthy: The heartbeat's health flag.
    """

    def __init__(self, timeout_s: float, healthy: Callable[[], bool], slice_s: float = 0.5) -> None:
        self.timeout_s = timeout_s
        self._healthy = healthy
        self._slice = slice_s

    def __call__(self, future: Future[Any]) -> Any:
        """The reply; TimeoutError when none came in time or the server went down meanwhile."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                return future.result(max(0.0, min(self._slice, left)))
            except TimeoutError:
                if left <= self._slice or not self._healthy():
                    future.cancel()
                    raise TimeoutError("no reply from the LMCache server") from None


class KVTransferPath(Protocol):
    """One transfer mode's registration and data path (lmcache-driven or engine-driven)."""

    mode: str

    def register(self) -> None:
        """Register with the server, or refresh an existing registration (same instance id)."""

    def store(self, keys: Sequence[tuple[CacheKey, list[int]]]) -> list[Outcome]:
        """Store each `(key, block_ids)`; one outcome each."""

    def retrieve(self, keys: Sequence[tuple[CacheKey, list[int], int]]) -> list[Outcome]:
        """Load each `(key, block_ids, skip_first_n_tokens)`; one outcome each."""

    def unregister(self) -> None:
        """Drop the registration (best effort)."""

    def close(self) -> None:
        """Release local resources (mappings, segment names)."""
