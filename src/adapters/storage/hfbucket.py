"""hfbucket: a Hugging Face Storage Bucket (mutable object storage on the Hub) through `huggingface_hub`.

Each object (header + payload, object_format.py) is one file `<prefix><key_name>` in `bucket`; a batch
of stores is one `batch_bucket_files(add=...)` call, a batch of deletes one `delete=` call, lookups one
`get_bucket_paths_info` call, loads one `download_bucket_files` call into a private temporary directory
(mode 0700, removed after), then verified and copied into the buffers. Listing and usage walk
`list_bucket_tree(prefix, recursive=True)`. The blocking client runs on `num_workers` threads.

Not tested against the Hub (this machine reaches no service but package registries): the contract
suite runs this adapter over a fake `huggingface_hub` module with the same calls
(`tests/fakes/hf_bucket.py`). Needs `pip install lmcache[hfbucket]`; the token comes from `token`,
else HF_TOKEN or the stored login.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage._adapter_state import empty_page, page_of, tracked
from lmcache.adapters.storage._blocking import run_on
from lmcache.adapters.storage._load_outcomes import Outcome, decode_all, encode_all
from lmcache.adapters.storage._remote_tier import RemoteTier
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.object_format import key_name, parse_key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

__all__ = ("HfBucketL2Adapter",)


class HfBucketL2Adapter(RemoteTier):
    """Hugging Face bucket L2 tier; see the module docstring."""

    kind = "hfbucket"

    def __init__(
        self,
        bucket: str,
        prefix: str = "lmcache/",
        token: str | None = None,
        endpoint: str | None = None,
        num_workers: int = 8,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        try:
            hub = importlib.import_module("huggingface_hub")
        except ModuleNotFoundError as exc:
            raise L2ConfigError(
                "needs the optional package 'huggingface_hub'; install lmcache[hfbucket]"
            ) from exc
        self.bucket = bucket
        self.prefix = prefix
        self.api = hub.HfApi(endpoint=endpoint, token=token)
        self._init_tier(bucket, max_capacity_gb, persist_enabled)
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lmcache-hfbucket-l2")

    def _path(self, key: ObjectKey) -> str:
        return self.prefix + key_name(key)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_on(self._pool, lambda: fn(*args, **kwargs))

    async def _present(self, keys: Sequence[ObjectKey]) -> list[bool]:
        infos = await self._call(
            lambda: list(self.api.get_bucket_paths_info(self.bucket, [self._path(k) for k in keys]))
        )
        found = {info.path for info in infos}
        return [self._path(k) in found for k in keys]

    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """One batch upload of whole objects."""
        add = [(blob, self._path(k)) for k, blob in zip(keys, encode_all(keys, buffers), strict=True)]

        async def upload() -> list[bool]:
            await self._call(self.api.batch_bucket_files, self.bucket, add=add)
            return [True] * len(keys)

        return self._stores_done(keys, await self._answers("store", keys, upload))

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """One paths-info call; pin the hits."""
        return self._locks.lock(keys, await self._answers("lookup", keys, lambda: self._present(keys)))

    def _download(self, keys: Sequence[ObjectKey]) -> list[bytes | None]:
        scratch = Path(tempfile.mkdtemp(prefix="lmcache-hfbucket-"))  # 0700 by mkdtemp
        try:
            targets = [scratch / f"{i}.kv" for i in range(len(keys))]
            files = [(self._path(k), str(t)) for k, t in zip(keys, targets, strict=True)]
            self.api.download_bucket_files(self.bucket, files, raise_on_missing_files=False)
            return [t.read_bytes() if t.exists() else None for t in targets]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """One download call into a private scratch directory; verify and copy; damage is deleted."""
        try:
            blobs = await self._call(self._download, keys)
        except Exception as exc:
            self._error("load", exc)
            blobs = [None] * len(keys)
        return await self._quarantine(keys, decode_all(keys, blobs, buffers, exact))

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Presence, then one batch delete of the present files."""
        if not keys:
            return []
        try:
            present = await self._present(keys)
            gone = [self._path(k) for k, ok in zip(keys, present, strict=True) if ok]
            if gone:
                await self._call(self.api.batch_bucket_files, self.bucket, delete=gone)
        except Exception as exc:
            self._error("delete", exc)
            return [False] * len(keys)
        self._stored.difference_update(keys)
        return present

    async def _tree(self) -> list[tuple[ObjectKey, int]]:
        def walk() -> list[tuple[str, int]]:
            entries = self.api.list_bucket_tree(self.bucket, self.prefix, recursive=True)
            return [(e.path, int(e.size)) for e in entries if getattr(e, "type", "file") == "file"]

        out = []
        for path, size in await self._call(walk):
            try:
                out.append((parse_key_name(path[len(self.prefix) :]), size))
            except ValueError:
                continue
        return out

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """The bucket's objects under the prefix, ordered by name."""
        try:
            by_name = {key_name(k): k for k, _ in await self._tree()}
        except Exception as exc:
            self._error("list", exc)
            return empty_page()
        names, nxt = page_of(sorted(by_name), cursor, limit)
        return KeyPage(tuple(by_name[n] for n in names), nxt)

    async def usage(self) -> L2Usage:
        """File sizes under the prefix."""
        try:
            pairs = await self._tree()
        except Exception as exc:
            self._error("usage", exc)
            pairs = []
        return self._usage_of(pairs)

    async def _release(self) -> None:
        self._pool.shutdown(wait=True)
