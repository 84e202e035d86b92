"""mooncake_store: Mooncake Store (a distributed KV-cache store) through its Python client.

Each object is one Mooncake object `<key_prefix><key_name>` holding header + payload (object_format.py).
Transfers are copy-free: `batch_put_from_multi_buffers` sends the header and the L1 payload as two
registered buffers of one object, `batch_get_into_multi_buffers` receives the header into a small
buffer and the payload straight into the L1 extent, then the checksum is verified. The L1 arena is
registered once (`register_l1`); other buffers are registered per call (_native_mem.py). An object of
another size than the buffer (or a damaged one) takes a slow path that reads it whole and lets the
object format classify it: another layout is a plain miss, damage is quarantined (force-removed).

Mooncake leases an object for `default_kv_lease_ttl` (10 s) after each read, and refuses to remove it
meanwhile (-706). `delete` then answers True and hides the key at once (lookups miss it), and a
background task retries the removal until the lease lapses; a store of the same key cancels the
pending removal. Every read renews the lease, so an object other servers keep reading would never be
removed: `FORCE_REMOVE_AFTER_S` after the delete it is removed by force (a read racing that removal
fails its checksum and is a miss, never wrong data).

With `global_segment_size: 0` this server contributes no memory: objects live in storage nodes
(`mooncake_client`) and outlive it. Listing and usage read the master's admin HTTP server
(`master_metrics_url`, `GET /get_all_keys`, then one `get_size` per key of ours); without it listings
are empty. Network: mooncake_master binds its RPC and admin servers where told (`--rpc_address`,
`--metrics_host`, `--http_metadata_server_host`); TCP transfers use `MC_TCP_BIND_ADDRESS` (Mooncake's
environment variable; unset: the host's first active interface), and the transfer engine of every
client (this one included) has RPC listeners on all interfaces: firewall them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

try:
    from mooncake.store import MooncakeDistributedStore, ReplicateConfig
except ModuleNotFoundError:
    raise  # the wheel is missing: the L2 factory names the pip extra
except ImportError as exc:  # the wheel is there, a system library it links is not (libibverbs1)
    _LOAD_ERROR: ImportError | None = exc
else:
    _LOAD_ERROR = None

from lmcache.adapters.storage._adapter_state import empty_page, page_of, tracked
from lmcache.adapters.storage._blocking import run_on
from lmcache.adapters.storage._load_outcomes import Outcome, damaged_keys
from lmcache.adapters.storage._mooncake_io import NOT_FOUND, get_all, get_all_sized, put_all
from lmcache.adapters.storage._native_mem import RegisteredRanges
from lmcache.adapters.storage._remote_tier import RemoteTier, named_keys, parse_names
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

__all__ = ("MooncakeL2Adapter",)

LEASED = -706
_RETRY_REMOVE_S = 0.5
FORCE_REMOVE_AFTER_S = 12.0  # past Mooncake's default 10 s lease: the object is being re-read


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise L2ConfigError(
            f"mooncake_store: setup failed: master {address} is not reachable ({exc}); "
            "is mooncake_master running there?"
        ) from exc


class MooncakeL2Adapter(RemoteTier):
    """Mooncake Store L2 tier; see the module docstring."""

    kind = "mooncake_store"

    def __init__(
        self,
        master_server_address: str,
        metadata_server: str = "P2PHANDSHAKE",
        num_workers: int = 4,
        local_hostname: str = "127.0.0.1",
        protocol: str = "tcp",
        device_name: str = "",
        global_segment_size: int = 0,
        local_buffer_size: int = 16 << 20,
        replica_num: int = 1,
        key_prefix: str = "lmcache:",
        master_metrics_url: str | None = None,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        if _LOAD_ERROR is not None:
            raise L2ConfigError(
                f"mooncake_store: the Mooncake client cannot load ({_LOAD_ERROR}); it needs libibverbs1 "
                "even for protocol tcp (Debian/Ubuntu: apt-get install libibverbs1)"
            )
        self.prefix = key_prefix
        self.master = master_server_address
        self.metrics_url = master_metrics_url.rstrip("/") if master_metrics_url else None
        self._init_tier(master_server_address, max_capacity_gb, persist_enabled)
        self._doomed: dict[ObjectKey, float] = {}  # deleted, refused while leased -> monotonic deadline
        self._retry_task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-mooncake")
        self._config = ReplicateConfig()
        self._config.replica_num = replica_num
        _check_reachable(master_server_address)  # setup itself retries for ~90 s before failing
        self.client = MooncakeDistributedStore()
        code = self.client.setup(
            local_hostname,
            metadata_server,
            global_segment_size,
            local_buffer_size,
            protocol,
            device_name,
            master_server_address,
        )
        if code != 0:
            self.client.close()
            raise L2ConfigError(
                f"mooncake_store: setup failed with code {code} (master {master_server_address}, "
                f"metadata {metadata_server}); is mooncake_master running there?"
            )
        self._memory = RegisteredRanges(self._register, self._unregister)

    # -- registration --------------------------------------------------------------------------------
    def _register(self, address: int, size: int) -> int:
        code = int(self.client.register_buffer(address, size))
        if code != 0:
            raise OSError(f"mooncake register_buffer failed with code {code}")
        return code

    def _unregister(self, address: int, _size: int, _handle: Any) -> None:
        self.client.unregister_buffer(address)

    def register_l1(self, address: int, size: int) -> None:
        """Register the L1 arena once, so loads and stores of L1 extents need no per-call registration."""
        self._memory.add_permanent(address, size)

    # -- helpers -------------------------------------------------------------------------------------
    def _name(self, key: ObjectKey) -> str:
        return self.prefix + key_name(key)

    def _put_all(self, keys: list[ObjectKey], buffers: list[memoryview]) -> list[int]:
        names = [self._name(k) for k in keys]
        return put_all(self.client, self._memory, self._config, names, keys, buffers)

    def _get_all(self, keys: list[ObjectKey], buffers: list[memoryview]) -> list[Outcome]:
        return list(get_all(self.client, self._memory, [self._name(k) for k in keys], keys, buffers))

    def _get_all_sized(self, keys: list[ObjectKey], buffers: list[memoryview]) -> list[Outcome]:
        return get_all_sized(self.client, self._memory, [self._name(k) for k in keys], keys, buffers)

    async def _run(self, fn: Any, *args: Any) -> Any:
        """Run a blocking client call on the pool; on cancellation wait for it (it may touch buffers)."""
        return await run_on(self._pool, fn, *args)

    # -- port ----------------------------------------------------------------------------------------
    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Put header + payload of each object from registered memory (payloads not copied)."""
        for key in keys:
            self._doomed.pop(key, None)  # a store cancels a pending removal
        try:
            codes = await self._run(self._put_all, list(keys), list(buffers))
        except Exception as exc:
            self._error("store", exc)
            codes = [-1] * len(keys)
        out = [code == 0 for code in codes]
        if any(code not in (0, -1) and code < 0 for code in codes):
            self._error("store", f"codes {sorted(set(codes))}")
        return self._stores_done(keys, out)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """batch_is_exist; keys deleted but not yet removed (leased) are misses; pin the hits."""
        if not keys:
            return []
        try:
            codes = await self._run(self.client.batch_is_exist, [self._name(k) for k in keys])
        except Exception as exc:
            self._error("lookup", exc)
            return [False] * len(keys)
        if any(code < 0 for code in codes):
            self._error("lookup", f"codes {sorted(set(codes))}")
        present = [code == 1 and key not in self._doomed for key, code in zip(keys, codes, strict=True)]
        return self._locks.lock(keys, present)

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """Header into a staging buffer, payload straight into each buffer; verified; odd sizes re-read.

        Not `exact` (`load_sized`): each object read whole at its stored size into the start of a larger
        buffer. Damage is force-removed (a reader's lease must not keep it readable).
        """
        get = self._get_all if exact else self._get_all_sized
        wanted = [i for i, k in enumerate(keys) if k not in self._doomed]
        try:
            outcomes = await self._run(get, [keys[i] for i in wanted], [buffers[i] for i in wanted])
        except Exception as exc:
            self._error("load", exc)
            outcomes = [False] * len(wanted)
        results: list[Outcome] = [False] * len(keys)
        for i, outcome in zip(wanted, outcomes, strict=True):
            results[i] = outcome
        damaged = damaged_keys(keys, results)
        if damaged:
            removed = await self._run(self._remove, damaged, True)
            self.counters.quarantined += sum(1 for code in removed if code == 0)
        return results

    def _remove(self, keys: list[ObjectKey], force: bool = False) -> list[int]:
        return [int(c) for c in self.client.batch_remove([self._name(k) for k in keys], force)]

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """batch_remove; a leased object is hidden now and removed once its lease lapses (True)."""
        if not keys:
            return []
        try:
            codes = await self._run(self._remove, list(keys))
        except Exception as exc:
            self._error("delete", exc)
            return [False] * len(keys)
        out = []
        for key, code in zip(keys, codes, strict=True):
            if code == LEASED and key not in self._doomed:
                self._doomed[key] = time.monotonic() + FORCE_REMOVE_AFTER_S
                out.append(True)
            else:
                out.append(code == 0)
        self._stored.difference_update(keys)
        if self._doomed and (self._retry_task is None or self._retry_task.done()):
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_removals())
        return out

    async def _retry_removals(self) -> None:
        while self._doomed and not self._closed:
            await asyncio.sleep(_RETRY_REMOVE_S)
            now = time.monotonic()
            for force in (False, True):
                keys = [k for k, deadline in self._doomed.items() if (deadline <= now) == force]
                if not keys:
                    continue
                try:
                    codes = await self._run(self._remove, keys, force)
                except Exception as exc:
                    self._error("delete", exc)
                    continue
                for key, code in zip(keys, codes, strict=True):
                    if code in (0, NOT_FOUND):
                        self._doomed.pop(key, None)

    async def _names(self) -> list[str]:
        if self.metrics_url is None:
            return []
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.get(f"{self.metrics_url}/get_all_keys")
            reply.raise_for_status()
        return sorted(
            line[len(self.prefix) :] for line in reply.text.splitlines() if line.startswith(self.prefix)
        )

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """Keys of this prefix from the master's admin server, ordered by name; empty without it."""
        try:
            names = await self._names()
        except (httpx.HTTPError, OSError) as exc:
            self._error("list", exc)
            return empty_page()
        page, nxt = page_of(names, cursor, limit)
        return KeyPage(tuple(key for key in parse_names(page) if key not in self._doomed), nxt)

    async def usage(self) -> L2Usage:
        """Sizes of this prefix's objects (one get_size each); zero without `master_metrics_url`."""
        try:
            names = await self._names()
        except (httpx.HTTPError, OSError) as exc:
            self._error("usage", exc)
            names = []
        pairs = named_keys(names)
        sizes = await self._run(lambda: [int(self.client.get_size(self.prefix + n)) for _, n in pairs])
        return self._usage_of((key, size) for (key, _), size in zip(pairs, sizes, strict=True) if size > 0)

    async def _release(self) -> None:
        """Remove the objects still leased (by force: no waiting at shutdown), leave the store."""
        if self._doomed:  # shutting down: cannot wait for the leases
            await self._run(self._remove, list(self._doomed), True)
            self._doomed.clear()
        self._closed = True
        if self._retry_task is not None:
            self._retry_task.cancel()
            await asyncio.gather(self._retry_task, return_exceptions=True)
        await self._run(self._memory.close)
        self._pool.shutdown(wait=True)
        self.client.close()
