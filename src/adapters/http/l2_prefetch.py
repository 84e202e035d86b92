"""Coordinator-driven prefetches (`POST /l2/prefetch`): load a token prefix from L2 into L1 and keep it.

The prefix is found and loaded by the prefetch controller, exactly as for an engine's lookup, for every
rank of the world; the loaded objects are then made permanent (a lookup's loads are temporary under the
`default` prefetch policy) and the lookup's read locks released. Results are kept for polling in a
bounded table (oldest forgotten first); all table access happens on uvicorn's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from lmcache.adapters.http.errors import bad_request, http_error
from lmcache.adapters.http.storage_calls import on_storage
from lmcache.domain.hashing import TokenError
from lmcache.domain.keys import InvalidKeyError, kv_ranks_for, validate_cache_salt, validate_model_name
from lmcache.domain.prefetch_controller import PrefetchRequest
from lmcache.domain.session_types import LookupGrid

if TYPE_CHECKING:
    from lmcache.adapters.http.schemas import PrefetchBody
    from lmcache.adapters.http.services import HttpServices

__all__ = ("MAX_RECORDS", "PrefetchBook")

logger = logging.getLogger("lmcache.http")
MAX_RECORDS = 10_000


async def _prefetch_and_keep(services: HttpServices, request: PrefetchRequest) -> int:
    """On the storage loop: prefetch, keep the prefix in L1, release the locks; returns keys found."""
    engine = services.engine
    result = await engine.prefetch.prefetch(request)
    prefix = [row[c] for row in request.rows for c in range(result.prefix_chunks)]
    engine.l1.retain(prefix)
    engine.l1.unlock_read(prefix, request.num_kv_readers)
    return len(prefix)


class PrefetchBook:
    """Submits prefetches and remembers their outcome by request id."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, request_id: str) -> dict[str, Any]:
        """The record of a request; 404 when unknown (never submitted, or forgotten)."""
        record = self._records.get(request_id)
        if record is None:
            raise http_error(404, f"no prefetch with request_id {request_id!r}")
        return record

    def _put(self, request_id: str, record: dict[str, Any]) -> None:
        self._records[request_id] = record
        while len(self._records) > self.max_records:
            self._records.popitem(last=False)

    async def submit(self, services: HttpServices, body: PrefetchBody) -> dict[str, Any]:
        """Validate, hash and start one prefetch; answers at once with the number of keys asked for."""
        if self._records.get(body.request_id, {}).get("status") == "pending":
            raise http_error(409, f"prefetch {body.request_id!r} is still running")
        try:
            model = validate_model_name(body.model_name)
        except InvalidKeyError as exc:
            raise bad_request("model_name", str(exc)) from None
        try:
            salt = validate_cache_salt(body.cache_salt)
        except InvalidKeyError as exc:
            raise bad_request("cache_salt", str(exc)) from None
        try:
            digests = await asyncio.to_thread(services.hasher.chunk_hashes, body.token_ids)
        except TokenError as exc:
            raise bad_request("token_ids", str(exc)) from None
        ranks = kv_ranks_for(body.world_size, None)
        total = len(digests) * len(ranks)
        layout = services.engine.workers.layout_for(model, body.world_size)
        answer = {"request_id": body.request_id, "total_keys": total}
        if layout is None or not digests or not services.l2_adapters:
            why = "no registered worker serves this model and world size" if layout is None else None
            self._put(body.request_id, _done(0, total, why))
            return {**answer, "status": "completed"}
        rows = LookupGrid(model, ranks, (0,), salt, 1).rows(digests)
        request = PrefetchRequest(rows, [layout.object_bytes] * len(rows), 1)
        self._put(body.request_id, {"status": "pending", "total_keys": total})
        task = asyncio.create_task(self._run(services, body.request_id, request, total))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {**answer, "status": "submitted"}

    async def _run(
        self, services: HttpServices, request_id: str, request: PrefetchRequest, total: int
    ) -> None:
        try:
            found = await on_storage(services, _prefetch_and_keep(services, request))
        except Exception as exc:
            logger.warning("Coordinator prefetch %s failed: %r", request_id, exc)
            self._put(request_id, _done(0, total, f"prefetch failed: {exc!r}"))
            return
        self._put(request_id, _done(found, total, None))


def _done(found: int, total: int, error: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"status": "completed", "found_keys": found, "total_keys": total}
    if error is not None:
        record["error"] = error
    return record
