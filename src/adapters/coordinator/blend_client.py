"""The server's side of the coordinator's CacheBlend directory (cacheblend.md §7, coordinator-api.md §3).

`match` posts `POST /blend/match {"model_scope", "tokens_b64"}` (uint32 LE tokens) and resolves a
Future with the matches; at most `concurrency` queries are in flight (`--coordinator-blend-match-
concurrency`), each under `--coordinator-blend-timeout`, the caller's deadline too. `publish` queues one
stored range for `POST /blend/fingerprints`; a single publisher sends queued ranges in batches, only
while no match query is in flight (lookups first), and drops (counting) what does not fit its bounded
queue: publication is fire-and-forget, a lost range only costs a future match. Everything runs on the
client's own thread and event loop, so a slow coordinator never blocks a request thread.
"""

from __future__ import annotations

import array
import asyncio
import base64
import collections
import contextlib
import logging
import sys
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import httpx

from lmcache.ports.blend import FleetMatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.blend_types import BlendScope

__all__ = ("FleetBlendClient", "encode_tokens")
logger = logging.getLogger(__name__)

_BATCH_RANGES = 64
_PRIORITY_WAIT_S = 0.5


def encode_tokens(tokens: Sequence[int]) -> str:
    """Token ids as base64 of little-endian uint32 (`tokens_b64`)."""
    packed = array.array("I" if array.array("I").itemsize == 4 else "L", tokens)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


class FleetBlendClient:
    """Match and publish against a coordinator (the `FleetMatcher` port).

    Args:
        coordinator_url: The coordinator's base URL.
        timeout_s: Per query and HTTP timeout (`--coordinator-blend-timeout`).
        concurrency: Match queries in flight at most (`--coordinator-blend-match-concurrency`).
        max_pending: Ranges queued for publication at most (older ones are dropped beyond it).
    """

    def __init__(
        self, coordinator_url: str, timeout_s: float = 1.0, concurrency: int = 8, max_pending: int = 4096
    ) -> None:
        if not timeout_s > 0 or concurrency < 1:
            raise ValueError("timeout_s must be > 0 and concurrency >= 1")
        self.url = coordinator_url.rstrip("/")
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._gate: asyncio.Semaphore | None = None
        self._http: httpx.AsyncClient | None = None
        self._in_flight = 0
        self.published = 0
        self.publish_dropped = 0
        self.match_errors = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the client thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="lmcache-blend-fleet", daemon=True)
            self._thread.start()
            self._ready.wait(5.0)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the thread (queued publications are dropped)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            logger.exception("CacheBlend fleet client crashed; lookups match locally")
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            self._http = http
            self._ready.set()
            publisher = asyncio.create_task(self._publisher(http))
            await self._stop.wait()
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        self._loop = None

    # ---------------------------------------------------------------- match
    def match(self, scope: BlendScope, tokens: Sequence[int]) -> Future[list[FleetMatch]]:
        """Submit one query; the Future fails when the client is not running or the query fails."""
        loop = self._loop
        if loop is None:
            failed: Future[list[FleetMatch]] = Future()
            failed.set_exception(RuntimeError("the CacheBlend fleet client is not running"))
            return failed
        body = {"model_scope": scope.fleet_scope, "tokens_b64": encode_tokens(tokens)}
        return asyncio.run_coroutine_threadsafe(self._match(body, len(tokens)), loop)

    async def _match(self, body: dict[str, Any], n_tokens: int) -> list[FleetMatch]:
        assert self._gate is not None and self._http is not None
        async with self._gate:
            self._in_flight += 1
            try:
                response = await self._http.post(f"{self.url}/blend/match", json=body)
                response.raise_for_status()
                payload = response.json()
            except Exception:
                self.match_errors += 1
                raise
            finally:
                self._in_flight -= 1
        return _parse_matches(payload, n_tokens)

    # -------------------------------------------------------------- publish
    def publish(
        self, scope: BlendScope, tokens: Sequence[int], chunk_hashes: Sequence[bytes], old_st_base: int
    ) -> None:
        """Queue one stored range; never blocks or raises."""
        entry = {
            "model_scope": scope.fleet_scope,
            "tokens": list(tokens),
            "object_keys": [h.hex() for h in chunk_hashes],
            "old_st_base": old_st_base,
        }
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.publish_dropped += 1
            self._pending.append(entry)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def _publisher(self, http: httpx.AsyncClient) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                waited = 0.0
                while self._in_flight and waited < _PRIORITY_WAIT_S:  # lookups first
                    await asyncio.sleep(0.005)
                    waited += 0.005
                with self._lock:
                    batch = [self._pending.popleft() for _ in range(min(_BATCH_RANGES, len(self._pending)))]
                if not batch:
                    break
                try:
                    response = await http.post(f"{self.url}/blend/fingerprints", json={"ranges": batch})
                    response.raise_for_status()
                    self.published += len(batch)
                except Exception as exc:
                    self.publish_dropped += len(batch)
                    logger.warning("Publishing %d CacheBlend range(s) failed: %r", len(batch), exc)


def _parse_matches(payload: Any, n_tokens: int) -> list[FleetMatch]:
    """`{"matches": [{"object_key", "old_st", "cur_st"}]}` -> matches; malformed entries are skipped."""
    raw = payload.get("matches") if isinstance(payload, dict) else None
    if not isinstance(raw, list):
        raise ValueError("coordinator blend match reply has no 'matches' list")
    out: list[FleetMatch] = []
    for item in raw[: max(0, n_tokens)]:
        try:
            key = item.get("object_key") or item.get("chunk_hash")
            chunk_hash = bytes.fromhex(key)
            old_st, cur_st = item["old_st"], item["cur_st"]
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        if isinstance(old_st, int) and isinstance(cur_st, int) and chunk_hash:
            out.append(FleetMatch(chunk_hash, old_st, cur_st))
    return out
