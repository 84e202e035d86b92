"""Fixtures of the L2 contract suite: loopback servers and one harness per backend.

Adapters are built the way the server builds them (spec JSON -> validated spec -> L2 factory), without
the resilience wrapper so each test sees the raw adapter; the outage tests add the wrapper themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.storage import object_format
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_container import l2_adapters
from tests.integration.l2.servers import (
    S3_CREDS,
    MooncakeCluster,
    RedisClusterServers,
    RedisServer,
    S3Server,
    valkey_binary,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lmcache.domain.keys import ObjectKey

REMOTE = ["resp", "resp_cluster", "valkey", "s3", "mooncake_store", "aerospike", "hfbucket"]
SLOTTED = ["raw_block", "dax"]
FILES = ["fs", "fs_native", "nixl_store", "nixl_store_dynamic"]
ALL_BACKENDS = ["fake", "mock", "plugin", "native_plugin", "fault_inject", *FILES, *SLOTTED, *REMOTE]
# Backends that keep the object format (header + checksum) and so detect tampering.
VERIFYING = ["mock", "native_plugin", "fault_inject", *FILES, *SLOTTED, *REMOTE]
PERSISTENT = [*FILES, *SLOTTED, *REMOTE]
RESP_LIKE = ("resp", "resp_cluster", "valkey")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("valkey"), binary=valkey_binary()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mooncake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MooncakeCluster]:
    cluster = MooncakeCluster(tmp_path_factory.mktemp("mooncake")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def native_connector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Compile tests/integration/l2/native/kvstore.c into an importable extension; yields its module name."""
    out = tmp_path_factory.mktemp("native")
    build_extension(Path(__file__).parent / "native" / "kvstore.c", out)
    sys.path.insert(0, str(out))
    yield "kvstore"
    sys.path.remove(str(out))
    sys.modules.pop("kvstore", None)


def build_extension(source: Path, out: Path) -> Path:
    """Gcc a one-file CPython extension into `out` (gcc and Python's headers are on the test machine)."""
    target = out / f"{source.stem}{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Werror",
            f"-I{include}",
            str(source),
            "-o",
            str(target),
        ],
        check=True,
        capture_output=True,
    )
    return target


def build(spec: dict[str, Any]) -> Any:
    """One raw adapter from its `--l2-adapter` JSON, through config validation and the factory."""
    parsed = L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter
    return l2_adapters(parsed, resilient=False)[0]


def resp_spec(server: RedisServer) -> dict[str, Any]:
    return {"type": "resp", "host": server.url(), "port": server.port, "num_workers": 4}


def s3_spec(server: S3Server, prefix: str) -> dict[str, Any]:
    return {
        "type": "s3",
        "s3_endpoint": f"s3://{server.bucket}/{prefix}",
        "s3_region": "us-east-1",
        "endpoint_url": server.endpoint_url,
        "s3_num_io_threads": 8,
        **S3_CREDS,
    }


@dataclass
class Harness:
    """A backend under test: `make()` opens an adapter over the same storage each time."""

    name: str
    spec: dict[str, Any] | None
    server: Any = None
    made: list[Any] = field(default_factory=list)

    @property
    def persistent(self) -> bool:
        return self.name in PERSISTENT

    def make(self) -> Any:
        if self.spec is None:
            from tests.fakes.l2_adapter import FakeL2Adapter

            adapter: Any = FakeL2Adapter()
        else:
            adapter = build(self.spec)
        self.made.append(adapter)
        return adapter

    async def tamper(self, adapter: Any, key: ObjectKey, how: str, other: ObjectKey | None = None) -> None:
        """Damage a stored object: `flip` a payload byte, `cut` its tail, or `swap` in another key's."""
        blob = bytearray(await self._read(adapter, key))
        if how == "flip":
            blob[-1] ^= 0xFF
        elif how == "cut":
            del blob[-7:]
        elif how == "swap":
            assert other is not None
            blob = bytearray(await self._read(adapter, other))
        await self._write(adapter, key, bytes(blob))

    async def _read(self, adapter: Any, key: ObjectKey) -> bytes:
        inner = getattr(adapter, "inner", adapter)
        if self.name in ("mock", "fault_inject"):
            return bytes(inner.objects[key])
        if self.name in FILES:
            return Path(inner._path(key)).read_bytes()
        if self.name in RESP_LIKE:
            return bytes(await inner._direct().get("lmcache:" + object_format.key_name(key)))
        if self.name == "s3":
            reply = await (await inner._s3()).get_object(Bucket=inner.bucket, Key=inner._name(key))
            async with reply["Body"] as stream:
                return bytes(await stream.read())
        if self.name == "mooncake_store":
            return bytes(inner.client.get(inner._name(key)))
        if self.name == "native_plugin":
            return _native_value(inner, key)
        if self.name == "hfbucket":
            from tests.fakes import hf_bucket

            return hf_bucket.BUCKETS[inner.bucket][inner._path(key)]
        if self.name == "aerospike":
            blob = inner._get(object_format.key_name(key))
            assert blob is not None
            return bytes(blob)
        if self.name in SLOTTED:
            slot, size = inner._index[key]
            with Path(inner.device_path).open("rb") as f:
                f.seek(inner._slot_offset(slot))
                return f.read(size)
        raise AssertionError(f"{self.name} keeps no object format")

    async def _write(self, adapter: Any, key: ObjectKey, blob: bytes) -> None:
        inner = getattr(adapter, "inner", adapter)
        if self.name in ("mock", "fault_inject"):
            inner.objects[key] = bytearray(blob)
        elif self.name in FILES:
            Path(inner._path(key)).write_bytes(blob)
        elif self.name in RESP_LIKE:
            await inner._direct().set("lmcache:" + object_format.key_name(key), blob)
        elif self.name == "s3":
            await (await inner._s3()).put_object(Bucket=inner.bucket, Key=inner._name(key), Body=blob)
        elif self.name in SLOTTED:
            slot, size = inner._index[key]
            with Path(inner.device_path).open("r+b") as f:  # zero-filled: a slot cannot be cut short
                f.seek(inner._slot_offset(slot))
                f.write(blob + bytes(max(0, size - len(blob))))
        elif self.name == "hfbucket":
            from tests.fakes import hf_bucket

            hf_bucket.BUCKETS[inner.bucket][inner._path(key)] = blob
        elif self.name == "aerospike":
            inner._remove(object_format.key_name(key))
            inner._put((object_format.key_name(key), blob))
        elif self.name == "native_plugin":
            name = "lmcache:" + object_format.key_name(key)
            inner.connector.batch_delete([name])
            assert inner.connector.batch_set([name], [blob]) == [True]
        elif self.name == "mooncake_store":
            assert inner.client.remove(inner._name(key), True) == 0
            assert inner.client.put(inner._name(key), blob) == 0


def _local_spec(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if name == "raw_block":
        path = tmp_path / "device.img"
        return {
            "type": "raw_block",
            "device_path": str(path),
            "slot_bytes": 4 << 20,
            "capacity_bytes": (1 << 20) + 32 * (4 << 20),
            "meta_total_bytes": 1 << 20,
        }
    if name == "dax":
        shm = Path(tempfile.mkdtemp(prefix="lmcache-dax-", dir="/dev/shm"))
        request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))
        return {
            "type": "dax",
            "device_path": str(shm / "pmem"),
            "max_dax_size_gb": 0.125,
            "slot_bytes": 4 << 20,
        }
    if name == "fs":
        return {"type": "fs", "base_path": str(tmp_path / "l2"), "relative_tmp_dir": "staging"}
    if name == "fs_native":
        return {"type": "fs_native", "base_path": str(tmp_path / "l2n"), "num_workers": 4}
    if name.startswith("nixl_store"):
        params = {"file_path": str(tmp_path / "nixl"), "use_direct_io": "false"}
        if name == "nixl_store":
            return {"type": name, "backend": "POSIX", "backend_params": params, "pool_size": 64}
        return {"type": name, "backend": "POSIX", "backend_params": {**params, "max_capacity_gb": "1"}}
    if name == "native_plugin":
        module = request.getfixturevalue("native_connector")
        return {
            "type": "native_plugin",
            "module_path": module,
            "class_name": "Store",
            "adapter_params": {"capacity": 64},
        }
    if name == "plugin":
        return {
            "type": "plugin",
            "module_path": "tests.fakes.l2_adapter",
            "class_name": "FakeL2Adapter",
            "adapter_params": {"name": "plugin"},
        }
    raise AssertionError(name)


def _spec(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any] | None, Any]:
    mock = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 50}
    if name == "fake":
        return None, None
    if name == "mock":
        return mock, None
    if name == "fault_inject":
        return {"type": "fault_inject", "adapter": mock, "load_drop_rate": 0.0, "seed": 7}, None
    if name in ("plugin", "native_plugin", *FILES, *SLOTTED):
        return _local_spec(name, request, tmp_path), None
    if name == "resp":
        server = request.getfixturevalue("redis_server")
        server.client().flushall()
        return resp_spec(server), server
    if name == "resp_cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return {"type": "resp", "host": "127.0.0.1", "port": cluster.port, "num_workers": 4}, cluster
    if name == "valkey":
        server = request.getfixturevalue("valkey_server")
        server.client().flushall()
        return {"type": "valkey", "host": "127.0.0.1", "port": server.port, "num_workers": 4}, server
    if name == "s3":
        server = request.getfixturevalue("s3_server")
        return s3_spec(server, f"t-{uuid.uuid4().hex[:8]}"), server
    if name == "aerospike":  # no server is reachable here: the client boundary, over a fake client module
        from tests.fakes import aerospike_client

        aerospike_client.install(request.getfixturevalue("monkeypatch"))
        return {"type": "aerospike", "hosts": "127.0.0.1:3000", "target_segment_bytes": 64 << 10}, None
    if name == "hfbucket":  # the Hub is not reachable here: the client boundary, over a fake module
        from tests.fakes import hf_bucket

        hf_bucket.install(request.getfixturevalue("monkeypatch"))
        return {"type": "hfbucket", "bucket": "org/kv-cache", "prefix": "fleet-a/"}, None
    if name == "mooncake_store":
        cluster = request.getfixturevalue("mooncake")
        return cluster.spec(f"t-{uuid.uuid4().hex[:8]}:"), cluster
    raise AssertionError(name)


async def _harness(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    spec, server = _spec(name, request, tmp_path)
    harness = Harness(name, spec, server)
    yield harness
    for adapter in harness.made:
        await adapter.close()


@pytest.fixture(params=ALL_BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _harness(request.param, request, tmp_path):
        yield harness


@pytest.fixture(params=VERIFYING)
async def verifying(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _harness(request.param, request, tmp_path):
        yield harness


@pytest.fixture(params=PERSISTENT)
async def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _harness(request.param, request, tmp_path):
        yield harness


def _native_value(adapter: Any, key: ObjectKey) -> bytes:
    name = "lmcache:" + object_format.key_name(key)
    (size,) = adapter.connector.batch_get([name], [bytearray(0)])
    buf = bytearray(size)
    assert adapter.connector.batch_get([name], [buf]) == [size]
    return bytes(buf)
