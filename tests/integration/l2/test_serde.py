"""Serde around real backends, built from `--l2-adapter` JSON by the factory as the server builds them."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from lmcache.adapters.storage.object_format import encode_header, parse_header
from lmcache.adapters.storage.serde_aesgcm import AesGcmSerde
from lmcache.adapters.storage.serde_base import parse_envelope
from lmcache.adapters.storage.serde_fp8 import Fp8Serde
from lmcache.app.config import ConfigError
from lmcache.app.config.l2 import L2Config
from lmcache.app.l2_container import l2_adapters
from tests.integration.l2.conftest import build, resp_spec, s3_spec
from tests.integration.l2.test_contract import empty, key
from tests.unit.test_serde_stages import documented_bound, kv_like

if TYPE_CHECKING:
    from tests.integration.l2.servers import RedisServer, S3Server


def key_file(tmp_path: Path, name: str = "master.key") -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return str(path)


def fs_spec(tmp_path: Path, serde: Any = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "fs", "base_path": str(tmp_path / "l2"), **extra}
    if serde is not None:
        spec["serde"] = serde
    return spec


def object_bytes(adapter: Any, k: Any) -> bytes:
    fs = adapter
    while not hasattr(fs, "_path"):
        fs = fs.inner
    return Path(fs._path(k)).read_bytes()


def rewrite_payload(adapter: Any, k: Any, payload: bytes) -> None:
    """Replace an fs object's payload and recompute its checksum: what someone with write access can do."""
    fs = adapter
    while not hasattr(fs, "_path"):
        fs = fs.inner
    Path(fs._path(k)).write_bytes(encode_header(k, payload) + payload)


def stored_payload(adapter: Any, k: Any) -> bytes:
    blob = object_bytes(adapter, k)
    return blob[parse_header(blob).header_len :]


async def test_aesgcm_over_fs_round_trips_and_leaves_no_plaintext_on_disk(tmp_path: Path) -> None:
    adapter = build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": key_file(tmp_path)}))
    data = kv_like(200_000)
    assert await adapter.store([key(1)], [data]) == [True]
    on_disk = object_bytes(adapter, key(1))
    plain = bytes(data)
    runs = {plain[i : i + 16] for i in range(0, len(plain) - 16, 997)}
    assert not any(run in on_disk for run in runs)
    out = empty(data.nbytes)
    assert await adapter.load([key(1)], [out]) == [True]
    assert bytes(out) == plain
    await adapter.close()


async def test_aesgcm_two_salts_store_different_ciphertexts(tmp_path: Path) -> None:
    adapter = build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": key_file(tmp_path)}))
    data = kv_like(10_000)
    a, b = key(1, salt="tenant-a"), key(1, salt="tenant-b")
    assert await adapter.store([a, b], [data, data]) == [True, True]
    ours, theirs = stored_payload(adapter, a), stored_payload(adapter, b)
    assert ours != theirs
    # Tenant b's ciphertext put in place of tenant a's (checksum made valid) does not decrypt as a's.
    rewrite_payload(adapter, a, theirs)
    assert await adapter.load([a], [empty(data.nbytes)]) == [False]
    assert adapter.serde_counters["auth_failures"] == 1
    await adapter.close()


async def test_a_flipped_ciphertext_byte_is_a_miss_and_counted(tmp_path: Path) -> None:
    adapter = build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": key_file(tmp_path)}))
    data = kv_like(10_000)
    assert await adapter.store([key(1), key(2)], [data, data]) == [True, True]
    # A raw flip: the backend's checksum sees it (a corrupt object, quarantined).
    path_blob = bytearray(object_bytes(adapter, key(1)))
    path_blob[-100] ^= 0x04
    fs = adapter.inner
    Path(fs._path(key(1))).write_bytes(bytes(path_blob))
    assert await adapter.load([key(1)], [empty(data.nbytes)]) == [False]
    assert adapter.counters.corrupt == 1
    # A flip with the checksum recomputed: AES-GCM's tag sees it.
    payload = bytearray(stored_payload(adapter, key(2)))
    payload[len(payload) // 2] ^= 0x04
    rewrite_payload(adapter, key(2), bytes(payload))
    out = empty(data.nbytes)
    assert await adapter.load([key(2)], [out]) == [False]
    assert adapter.serde_counters["auth_failures"] == 1
    await adapter.close()


async def test_a_wrong_master_key_is_a_miss_not_garbage(tmp_path: Path) -> None:
    first = build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": key_file(tmp_path, "a.key")}))
    data = kv_like(10_000)
    assert await first.store([key(1)], [data]) == [True]
    await first.close()
    second = build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": key_file(tmp_path, "b.key")}))
    assert await second.lookup_and_lock([key(1)]) == [True]
    assert await second.load([key(1)], [empty(data.nbytes)]) == [False]
    assert second.serde_counters["auth_failures"] == 1
    await second.unlock([key(1)])
    await second.close()


@pytest.mark.parametrize("backend", ["fs", "mock", "resp", "s3"])
async def test_zstd_is_byte_exact_and_smaller_on_every_backend(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    serde = {"type": "zstd", "level": 3}
    if backend == "fs":
        spec = fs_spec(tmp_path, serde)
    elif backend == "mock":
        spec = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 50, "serde": serde}
    elif backend == "resp":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client().flushall()
        spec = {**resp_spec(server), "serde": serde}
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        spec = {**s3_spec(s3, f"zstd-{os.getpid()}"), "serde": serde}
    adapter = build(spec)
    data = [kv_like(150_000, seed=i) for i in range(3)] + [memoryview(bytearray(b"\x01\x02\x03"))]
    keys = [key(i) for i in range(4)]
    assert await adapter.store(keys, data) == [True] * 4
    usage = await adapter.usage()
    assert usage.used_bytes < sum(d.nbytes for d in data[:3])  # compressed
    out = [empty(d.nbytes) for d in data]
    assert await adapter.load(keys, out) == [True] * 4
    assert [bytes(o) for o in out] == [bytes(d) for d in data]
    await adapter.delete(keys)
    await adapter.close()


async def test_a_chain_applies_in_order_and_reverses_on_load(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    chain = [{"type": "fp8", "source_dtype": "float16"}, {"type": "aesgcm", "master_key_path": path}]
    adapter = build(fs_spec(tmp_path, chain))
    data = kv_like(65_536)
    assert await adapter.store([key(1)], [data]) == [True]
    out = empty(data.nbytes)
    assert await adapter.load([key(1)], [out]) == [True]
    x = torch.frombuffer(bytearray(data), dtype=torch.float16).float()
    y = torch.frombuffer(bytearray(out), dtype=torch.float16).float()
    assert bool(((y - x).abs() <= documented_bound(x, "float8_e4m3fn", "float16")).all())
    # The stored bytes are aesgcm(fp8(data)): undoing the stages by hand, outermost first, gives the same.
    body = parse_envelope(memoryview(stored_payload(adapter, key(1))), data.nbytes, 2)
    aes, fp8 = AesGcmSerde(path), Fp8Serde(source_dtype="float16")
    quantized = bytearray(aes.decoded_size(key(1), body))
    aes.decode_into(key(1), body, memoryview(quantized))
    by_hand = bytearray(data.nbytes)
    fp8.decode_into(key(1), memoryview(quantized), memoryview(by_hand))
    assert by_hand == bytes(out)
    assert len(stored_payload(adapter, key(1))) < 0.53 * data.nbytes
    await adapter.close()


async def test_objects_written_with_another_serde_or_none_are_misses(tmp_path: Path) -> None:
    plain = build(fs_spec(tmp_path))
    data = kv_like(4096)
    assert await plain.store([key(1)], [data]) == [True]
    await plain.close()
    zstd = build(fs_spec(tmp_path, {"type": "zstd"}))
    assert await zstd.load([key(1)], [empty(data.nbytes)]) == [False]
    assert zstd.serde_counters["mismatches"] == 1
    assert await zstd.store([key(2)], [data]) == [True]
    await zstd.close()
    again = build(fs_spec(tmp_path))  # no serde: the stored size never matches a KV buffer
    assert await again.load([key(2)], [empty(data.nbytes)]) == [False]
    await again.close()


async def test_a_store_the_serde_cannot_encode_fails_for_that_key_only(tmp_path: Path) -> None:
    adapter = build(fs_spec(tmp_path, {"type": "fp8"}))  # source_dtype auto, no resolver: unknown dtype
    assert await adapter.store([key(1)], [kv_like(100)]) == [False]
    assert adapter.serde_counters["encode_failures"] == 1
    await adapter.close()


def _build(spec: dict[str, Any]) -> list[Any]:
    return l2_adapters(L2Config.model_validate({"l2_adapter": [spec]}).l2_adapter)


def test_serde_over_a_plugin_is_refused_at_start_up() -> None:
    spec = {
        "type": "plugin",
        "module_path": "tests.fakes.l2_adapter",
        "class_name": "FakeL2Adapter",
        "serde": {"type": "zstd"},
    }
    with pytest.raises(ConfigError, match=r"--l2-adapter #1 \(type 'plugin'\): \"serde\" needs an adapter"):
        _build(spec)


def test_a_world_readable_key_file_is_refused_at_start_up(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    Path(path).chmod(0o644)
    with pytest.raises(ConfigError, match=r"--l2-adapter #1 \(type 'fs'\): serde 'aesgcm': .*chmod 600"):
        _build(fs_spec(tmp_path, {"type": "aesgcm", "master_key_path": path}))


def test_a_missing_serde_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.delitem(sys.modules, "lmcache.adapters.storage.serde_zstd", raising=False)
    with pytest.raises(ConfigError) as caught:
        _build(fs_spec(tmp_path, {"type": "zstd"}))
    assert caught.value.messages == (
        "--l2-adapter #1 (type 'fs'): serde 'zstd' needs the optional package 'zstandard'; "
        "install lmcache[zstd]",
    )


def test_lmcache_keys_we_ignore_warn_once_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = fs_spec(tmp_path, affinity_tag="gpu0", per_op_workers={"load": 4})
    with caplog.at_level(logging.WARNING, logger="lmcache"):
        adapters = _build(spec)
    lines = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert lines == [
        "--l2-adapter #1 (type 'fs'): ignoring 'affinity_tag' (an LMCache key that has no effect here)",
        "--l2-adapter #1 (type 'fs'): ignoring 'per_op_workers' (an LMCache key that has no effect here)",
    ]
    import asyncio

    asyncio.run(adapters[0].close())
