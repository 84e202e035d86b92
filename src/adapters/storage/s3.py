"""s3: AWS S3 or an S3-compatible store through aiobotocore, at most `s3_num_io_threads` requests at once.

Each object is one S3 object `<prefix><key_name>` holding header + payload (object_format.py), written
with one PutObject, or a multipart upload past `multipart_threshold` bytes; either way it becomes
visible only when complete. `s3_endpoint` is `s3://bucket[/prefix]` or a bare `bucket` /
`bucket.s3.<region>.amazonaws.com`; `endpoint_url` points at an S3-compatible server. Departures:
aiobotocore speaks HTTP/1.1 only, so `s3_prefer_http2` is accepted and ignored; `s3_enable_s3express`
maps to botocore's S3 Express session auth (off disables it). The client is created on first use
(the constructor cannot await). `persist_enabled=False` deletes the objects this adapter
stored when it closes. Usage is a ListObjectsV2 pass (approximate under concurrent writers).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from lmcache.adapters.storage._adapter_state import empty_page, tracked
from lmcache.adapters.storage._blocking import offload
from lmcache.adapters.storage._load_outcomes import Outcome, decode_all, encode_all
from lmcache.adapters.storage._remote_tier import RemoteTier
from lmcache.adapters.storage.object_format import key_name, parse_key_name
from lmcache.ports.l2_adapter import KeyPage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Usage

__all__ = ("S3L2Adapter",)

_ERRORS = (BotoCoreError, ClientError, OSError, asyncio.TimeoutError)
_PART_BYTES = 8 << 20
_ABSENT = ("404", "NoSuchKey", "NotFound")  # error codes of a missing object (HEAD, GET)


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """Split `s3_endpoint` into (bucket, key prefix)."""
    if endpoint.startswith("s3://"):
        parts = urlsplit(endpoint)
        prefix = parts.path.strip("/")
        return parts.netloc, f"{prefix}/" if prefix else ""
    host = endpoint.split("://")[-1].split("/")[0]
    return (host.split(".s3.")[0] if ".s3." in host else host), ""


class S3L2Adapter(RemoteTier):
    """S3 L2 tier; see the module docstring."""

    kind = "s3"

    multipart_threshold = 64 << 20  # bytes; an instance attribute may lower it (tests do)

    def __init__(
        self,
        s3_endpoint: str,
        s3_region: str,
        s3_num_io_threads: int = 64,
        s3_prefer_http2: bool = True,
        s3_enable_s3express: bool = False,
        disable_tls: bool = False,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        endpoint_url: str | None = None,
        max_capacity_gb: float = 0.0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.bucket, self.prefix = parse_endpoint(s3_endpoint)
        self._init_tier(self.bucket, max_capacity_gb, persist_enabled)
        self._sem = asyncio.Semaphore(s3_num_io_threads)
        self._client_args: dict[str, Any] = {
            "region_name": s3_region,
            "endpoint_url": endpoint_url,
            "use_ssl": not disable_tls,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "config": AioConfig(
                max_pool_connections=s3_num_io_threads,
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 1, "mode": "standard"},  # the breaker does the retrying
                s3={"disable_s3_express_session_auth": not s3_enable_s3express},
            ),
        }
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    client = get_session().create_client("s3", **self._client_args)
                    self._client = await self._stack.enter_async_context(client)
        return self._client

    def _name(self, key: ObjectKey) -> str:
        return self.prefix + key_name(key)

    @tracked(False)
    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """PUT every object concurrently (multipart past the threshold)."""
        results = await asyncio.gather(*(self._put(k, b) for k, b in zip(keys, buffers, strict=True)))
        return self._stores_done(keys, list(results))

    async def _put(self, key: ObjectKey, buf: memoryview) -> bool:
        # Copied (and hashed) now, off the loop: the caller's view is not kept past this await.
        body = (await offload(buf.nbytes, encode_all, [key], [buf]))[0]
        async with self._sem:
            try:
                s3 = await self._s3()
                if len(body) <= self.multipart_threshold:
                    await s3.put_object(Bucket=self.bucket, Key=self._name(key), Body=body)
                else:
                    await self._multipart(s3, self._name(key), memoryview(body))
                return True
            except _ERRORS as exc:
                self._error("store", exc)
                return False

    async def _multipart(self, s3: Any, name: str, body: memoryview) -> None:
        upload = await s3.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, body.nbytes, _PART_BYTES), start=1):
                chunk = bytes(body[start : start + _PART_BYTES])
                reply = await s3.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": reply["ETag"], "PartNumber": number})
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(*_ERRORS):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise

    def _unless_absent(self, op: str, exc: BaseException) -> None:
        """A failed request is a backend error, unless S3 answered that the object is not there."""
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code not in _ABSENT:
            self._error(op, exc)

    async def _head(self, key: ObjectKey) -> bool:
        async with self._sem:
            try:
                await (await self._s3()).head_object(Bucket=self.bucket, Key=self._name(key))
                return True
            except _ERRORS as exc:
                self._unless_absent("lookup", exc)
                return False

    async def _present(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """HEAD every key concurrently: what lookups pin and what a delete reports as present."""
        return list(await asyncio.gather(*(self._head(k) for k in keys)))

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """HEAD every key concurrently; pin the hits."""
        return self._locks.lock(keys, await self._present(keys))

    @tracked(False)
    async def _load(
        self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview], exact: bool
    ) -> list[Outcome]:
        """GET every object concurrently, verify, copy each payload into its buffer."""
        blobs = await asyncio.gather(*(self._get(k) for k in keys))
        # offload() waits for its thread even when cancelled: buffers are written only while held.
        nbytes = sum(len(b) for b in blobs if b is not None)
        return await self._quarantine(keys, await offload(nbytes, decode_all, keys, blobs, buffers, exact))

    async def _get(self, key: ObjectKey) -> bytes | None:
        async with self._sem:
            try:
                reply = await (await self._s3()).get_object(Bucket=self.bucket, Key=self._name(key))
                async with reply["Body"] as stream:
                    data: bytes = await stream.read()
                return data
            except _ERRORS as exc:
                self._unless_absent("load", exc)
                return None

    async def delete(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """HEAD (to report presence), then one DeleteObjects call for the present keys."""
        present = await self._present(keys)
        names = [{"Key": self._name(k)} for k, ok in zip(keys, present, strict=True) if ok]
        for start in range(0, len(names), 1000):
            try:
                await (await self._s3()).delete_objects(
                    Bucket=self.bucket, Delete={"Objects": names[start : start + 1000], "Quiet": True}
                )
            except _ERRORS as exc:
                self._error("delete", exc)
                return [False] * len(keys)
        self._stored.difference_update(keys)
        return present

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        """ListObjectsV2 pages under the prefix; the cursor is S3's continuation token."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": max(1, limit)}
        if cursor:
            args["ContinuationToken"] = cursor
        try:
            reply = await (await self._s3()).list_objects_v2(**args)
        except _ERRORS as exc:
            self._error("list", exc)
            return empty_page()
        keys = [k for k, _ in self._parse(reply)]
        return KeyPage(tuple(keys), reply.get("NextContinuationToken") if reply.get("IsTruncated") else None)

    def _parse(self, reply: dict[str, Any]) -> list[tuple[ObjectKey, int]]:
        out = []
        for item in reply.get("Contents", []):
            try:
                out.append((parse_key_name(item["Key"][len(self.prefix) :]), int(item["Size"])))
            except ValueError:
                continue  # not one of ours
        return out

    async def usage(self) -> L2Usage:
        """Sum of object sizes under the prefix (a full ListObjectsV2 pass)."""
        sizes: list[tuple[ObjectKey, int]] = []
        try:
            paginator = (await self._s3()).get_paginator("list_objects_v2")
            async for reply in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                sizes += self._parse(reply)
        except _ERRORS as exc:
            self._error("usage", exc)
        return self._usage_of(sizes)

    async def _release(self) -> None:
        self._stored.clear()
        await self._stack.aclose()
        self._client = None
