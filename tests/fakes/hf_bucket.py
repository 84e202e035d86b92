"""A fake `huggingface_hub` module: the bucket calls the hfbucket adapter makes, over a shared dict.

Install it with `install(monkeypatch)`; `BUCKETS` maps bucket id -> {path: bytes} (shared by every
client, so objects outlive an adapter). Signatures follow huggingface_hub 2.x's HfApi.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pytest

BUCKETS: dict[str, dict[str, bytes]] = {}
CLIENTS: list[dict[str, Any]] = []


@dataclass
class BucketFile:
    path: str
    size: int
    type: str = "file"


class FakeHfApi:
    def __init__(self, endpoint: str | None = None, token: str | bool | None = None, **_: Any) -> None:
        CLIENTS.append({"endpoint": endpoint, "token": token})

    def batch_bucket_files(
        self,
        bucket_id: str,
        *,
        add: list[tuple[str | Path | bytes, str]] | None = None,
        copy: Any = None,
        delete: list[str] | None = None,
        token: Any = None,
    ) -> None:
        files = BUCKETS.setdefault(bucket_id, {})
        for source, path in add or []:
            files[path] = (
                bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
            )
        for path in delete or []:
            files.pop(path, None)

    def get_bucket_paths_info(
        self, bucket_id: str, paths: Iterable[str], *, token: Any = None
    ) -> Iterable[BucketFile]:
        files = BUCKETS.get(bucket_id, {})
        return [BucketFile(p, len(files[p])) for p in paths if p in files]

    def download_bucket_files(
        self,
        bucket_id: str,
        files: list[tuple[str, str | Path]],
        *,
        raise_on_missing_files: bool = False,
        token: Any = None,
    ) -> None:
        stored = BUCKETS.get(bucket_id, {})
        for remote, local in files:
            if remote in stored:
                Path(local).write_bytes(stored[remote])
            elif raise_on_missing_files:
                raise FileNotFoundError(remote)

    def list_bucket_tree(
        self, bucket_id: str, prefix: str | None = None, *, recursive: bool | None = None, token: Any = None
    ) -> Iterable[BucketFile]:
        files = BUCKETS.get(bucket_id, {})
        return [BucketFile(p, len(b)) for p, b in files.items() if p.startswith(prefix or "")]


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import huggingface_hub` return this fake; starts with no buckets."""
    BUCKETS.clear()
    CLIENTS.clear()
    module = types.ModuleType("huggingface_hub")
    module.HfApi = FakeHfApi  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
