"""The coordinator's calls back to MP servers, over httpx.

The server side of these endpoints belongs to the HTTP frontend; coordinator-api.md names them but leaves
their bodies open, so this module fixes them (the frontend must serve the same):

- `DELETE /l2` with `{"keys": [EncodedObjectKey, ...]}` -> 2xx `{"deleted": N}` (missing keys are not an
  error: they are gone).
- `GET /l2/keys?page_size=N[&page_token=T]` -> `{"keys": [{"key": EncodedObjectKey, "bytes": N}, ...],
  "next_page_token": str | null}`; a flat item (the key's fields plus `"bytes"`) is accepted too.
- `POST /l2/prefetch` with `{"request_id", "model_name", "world_size", "token_ids", "cache_salt"}` -> 2xx,
  and `GET /l2/prefetch/{request_id}` -> `{"status": "pending"}` or `{"status": "completed",
  "found_keys", "total_keys"}`: the prefetch fan-out forwards to the named server.

Every call raises `ServerCallError` on a transport error, a timeout, a non-2xx answer or a body it cannot
read; callers decide whether to retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from lmcache.domain.fleet_state import encode_key_row
from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("HttpFleetServers", "KeyPage", "ServerCallError")

KeyPage = tuple[list[tuple[ObjectKey, int]], str | None]


class ServerCallError(Exception):
    """A call to a server failed (unreachable, timed out, non-2xx, or an unreadable body)."""


def _encode(key: ObjectKey) -> dict[str, Any]:
    chunk_hash_hex, model_name, kv_rank, object_group_id, cache_salt = encode_key_row(key)
    return {
        "chunk_hash_hex": chunk_hash_hex,
        "model_name": model_name,
        "kv_rank": kv_rank,
        "object_group_id": object_group_id,
        "cache_salt": cache_salt,
    }


def _decode_item(item: Any) -> tuple[ObjectKey, int]:
    fields = item.get("key", item)
    nbytes = item.get("bytes", item.get("size", 0))
    key = ObjectKey.build(
        bytes.fromhex(fields["chunk_hash_hex"]),
        fields["model_name"],
        int(fields["kv_rank"]),
        int(fields.get("object_group_id", 0)),
        fields.get("cache_salt", ""),
    )
    return key, int(nbytes)


class HttpFleetServers:
    """httpx client for `DELETE /l2`, `GET /l2/keys` and the prefetch calls on servers.

    Args:
        timeout_s: Per-request timeout.
        token: Bearer token the servers require (their `--http-auth-token`), if any.
    """

    def __init__(self, timeout_s: float = 10.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=headers)

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerCallError(f"{method} {url}: {exc!r}") from exc
        if not response.is_success:
            raise ServerCallError(f"{method} {url}: HTTP {response.status_code} {response.text[:200]}")
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ServerCallError(f"{method} {url}: body is not JSON") from exc

    async def delete_keys(self, base_url: str, keys: Sequence[ObjectKey]) -> int:
        """Ask a server to delete `keys` from the shared L2; returns what it reports deleted."""
        body = await self._call("DELETE", f"{base_url}/l2", json={"keys": [_encode(k) for k in keys]})
        deleted = body.get("deleted", len(keys)) if isinstance(body, dict) else len(keys)
        return int(deleted)

    async def list_keys(self, base_url: str, page_size: int, page_token: str | None) -> KeyPage:
        """One page of the server's L2 keys with their sizes, and the next page's token (None at the end)."""
        params: dict[str, Any] = {"page_size": page_size}
        if page_token is not None:
            params["page_token"] = page_token
        body = await self._call("GET", f"{base_url}/l2/keys", params=params)
        try:
            items = [_decode_item(item) for item in body["keys"]]
            token = body.get("next_page_token")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServerCallError(f"GET {base_url}/l2/keys: unexpected body ({exc!r})") from exc
        return items, None if token in (None, "") else str(token)

    async def submit_prefetch(self, base_url: str, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a prefetch request to a server."""
        answer = await self._call("POST", f"{base_url}/l2/prefetch", json=body)
        return answer if isinstance(answer, dict) else {}

    async def prefetch_status(self, base_url: str, request_id: str) -> dict[str, Any]:
        """Poll a forwarded prefetch."""
        answer = await self._call("GET", f"{base_url}/l2/prefetch/{request_id}")
        if not isinstance(answer, dict):
            raise ServerCallError(f"GET {base_url}/l2/prefetch/{request_id}: body is not an object")
        return answer

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
