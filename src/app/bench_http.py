"""The HTTP side of `lmcache bench server`: server-computed checksums and the lock check after the run.

`--url` defaults to the HTTP frontend on the host of `--rpc-url` (`--http-port`, 8080 by default), so the
README's bench line compares checksums computed by the server without extra flags. When the frontend does
not answer, or the mode gives the server nothing to checksum (engine-driven: the server never maps the
engine's blocks), the bench falls back to local checksums and `note` says why and what to pass.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import httpx

from lmcache.app.bench_engine import INSTANCE_ID

__all__ = ("BenchHttp", "http_url")

_ANY_ADDRESS = {"", "*", "0.0.0.0", "::"}


def http_url(url: str | None, rpc_url: str, http_port: int) -> str | None:
    """`--url` as given, or derived from `--rpc-url`'s host and `--http-port`; None when `--url ''`."""
    if url is not None:
        return url.rstrip("/") or None
    host = urlsplit(rpc_url if "://" in rpc_url else f"tcp://{rpc_url}").hostname or ""
    if host in _ANY_ADDRESS:
        host = "localhost"  # a wildcard bind address is reached through loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http_port}"


class BenchHttp:
    """A client of the server's HTTP frontend that never fails the bench, only explains.

    Args:
        url: The frontend's base URL; None: no HTTP at all.
        timeout_s: Per-request timeout.
        mode: The transfer mode the bench runs in.
    """

    def __init__(self, url: str | None, timeout_s: float, mode: str) -> None:
        self.url = url
        self.note: str | None = None  # why checksums were computed locally, if they were
        token = os.environ.get("LMCACHE_HTTP_AUTH_TOKEN")  # a server with --http-auth-token needs it
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = httpx.Client(base_url=url, timeout=timeout_s, headers=headers) if url else None
        self._checksums = self._client is not None and mode == "lmcache_driven"
        if url is None:
            self.note = "--url '' given: no HTTP"
        elif mode != "lmcache_driven":
            self.note = (
                "the server checksums an engine's blocks only with --transfer-mode lmcache_driven, where it "
                "maps them"
            )

    def checksums(self, blocks: list[int], chunk_blocks: int) -> list[str] | None:
        """The server's per-chunk digests of our blocks, or None (then `note` says why)."""
        if not self._checksums or self._client is None:
            return None
        body = {
            "block_ids": blocks,
            "chunk_size": chunk_blocks,
            "instance_id": INSTANCE_ID,
            "layerwise": False,
        }
        try:
            reply = self._client.post("/cache/checksums", json=body)
            data = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            return self._give_up(
                f"{self.url} did not answer ({type(exc).__name__}); pass --url or --http-port"
            )
        if reply.status_code >= 400 or not isinstance(data, dict) or data.get("status") != "success":
            return self._give_up(f"POST {self.url}/cache/checksums answered {reply.status_code}")
        sums = data.get("chunk_checksums")
        return sums if isinstance(sums, list) else self._give_up("the server's answer had no checksums")

    def _give_up(self, why: str) -> list[str] | None:
        """Stop asking the server for checksums, remembering why; returns None (no checksums)."""
        self._checksums = False  # one failure is enough: no timeout per request after it
        self.note = why
        return None

    def lock_counts(self) -> dict[str, int] | None:
        """The server's live L1 locks from `/status` (every client's), or None without an answer."""
        if self._client is None:
            return None
        try:
            status: Any = self._client.get("/status").raise_for_status().json()
            l1 = status["storage_manager"]["l1_manager"]
            return {
                "read_locked_objects": int(l1["read_locked_object_count"]),
                "read_locks": int(l1["read_lock_count"]),
                "write_locked_objects": int(l1["write_locked_object_count"]),
            }
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
