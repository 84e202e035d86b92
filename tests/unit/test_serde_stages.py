"""Serde stages on their own: zstd is byte-exact, aesgcm authenticates per tenant, fp8 stays in its bound."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.serde_aesgcm import AesGcmSerde
from lmcache.adapters.storage.serde_base import SerdeAuthError, SerdeError, SerdeMismatchError
from lmcache.adapters.storage.serde_fp8 import FP8_FORMATS, GROUP, SOURCE_DTYPES, Fp8Serde
from lmcache.adapters.storage.serde_zstd import ZstdSerde, shuffle16, unshuffle16
from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from pathlib import Path

KEY = ObjectKey(b"\x07" * 32, "org/model", 0x01000100, 0, "tenant-a")
OTHER_SALT = KEY._replace(cache_salt="tenant-b")


def kv_like(values: int, dtype: torch.dtype = torch.float16, seed: int = 0) -> memoryview:
    """Values shaped like attention KV: per-channel scales, a few outlier channels, heavy tails."""
    gen = torch.Generator().manual_seed(seed)
    channels = 128
    rows = -(-values // channels)
    scale = torch.rand(channels, generator=gen) * 2 + 0.05
    scale[::37] *= 20  # outlier channels
    x = torch.randn(rows, channels, generator=gen) * scale
    return memoryview(bytearray(x.reshape(-1)[:values].to(dtype).view(torch.uint8).numpy().tobytes()))


def decode(stage: object, data: bytes | bytearray | memoryview, size: int, key: ObjectKey = KEY) -> bytes:
    out = bytearray(size)
    view = memoryview(data)
    assert stage.decoded_size(key, view) == size  # type: ignore[attr-defined]
    stage.decode_into(key, view, memoryview(out))  # type: ignore[attr-defined]
    return bytes(out)


# -- zstd -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4095, 1 << 20])
def test_shuffle_round_trips(size: int) -> None:
    data = memoryview(os.urandom(size))
    planes = shuffle16(data)
    out = bytearray(size)
    unshuffle16(planes.data, memoryview(out))
    assert bytes(out) == bytes(data)
    if size >= 4:
        words = np.frombuffer(data[: size // 2 * 2], np.uint16)
        assert planes[0] == words[0] & 0xFF and planes[size // 2] == words[0] >> 8


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("size", [0, 1, 7, 4096, 300_001])
def test_zstd_is_byte_exact(size: int, shuffle: bool) -> None:
    stage = ZstdSerde(level=1, shuffle=shuffle)
    for data in (memoryview(os.urandom(size)), kv_like(size // 2)):
        encoded = stage.encode(KEY, data)
        assert len(encoded) <= stage.max_encoded_size(data.nbytes)
        assert decode(stage, encoded, data.nbytes) == bytes(data)


def test_zstd_shuffle_compresses_kv_better_than_plain() -> None:
    data = kv_like(1 << 20)
    shuffled = len(ZstdSerde(shuffle=True).encode(KEY, data))
    plain = len(ZstdSerde(shuffle=False).encode(KEY, data))
    assert shuffled < plain < data.nbytes


def test_zstd_refuses_a_frame_claiming_another_size() -> None:
    stage = ZstdSerde()
    encoded = bytearray(stage.encode(KEY, kv_like(1000)))
    with pytest.raises(SerdeError):
        stage.decode_into(KEY, memoryview(encoded), memoryview(bytearray(1000)))  # 2000 bytes inside
    encoded[8:16] = (10**12).to_bytes(8, "little")  # the header claims a terabyte: refused, not allocated
    with pytest.raises(SerdeError):
        stage.decode_into(KEY, memoryview(encoded), memoryview(bytearray(2000)))
    with pytest.raises(SerdeMismatchError):
        stage.decoded_size(KEY, memoryview(b"AG" + bytes(30)))


# -- aesgcm ---------------------------------------------------------------------------------------------


def key_file(tmp_path: Path, name: str = "master.key", data: bytes | None = None, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(32) if data is None else data)
    path.chmod(mode)
    return str(path)


def test_aesgcm_round_trips_and_hides_the_plaintext(tmp_path: Path) -> None:
    stage = AesGcmSerde(key_file(tmp_path), aes_bits=256)
    data = kv_like(50_000)
    encoded = stage.encode(KEY, data)
    assert len(encoded) == stage.max_encoded_size(data.nbytes) == data.nbytes + 36
    assert bytes(data[1000:1032]) not in bytes(encoded)
    assert decode(stage, encoded, data.nbytes) == bytes(data)
    assert stage.encode(KEY, data) != encoded  # a fresh nonce every time


def test_aesgcm_tenants_get_different_keys(tmp_path: Path) -> None:
    stage = AesGcmSerde(key_file(tmp_path))
    assert stage.keys.derive("tenant-a") != stage.keys.derive("tenant-b")
    assert len(stage.keys.derive("tenant-a")) == 16
    data = kv_like(1000)
    theirs = stage.encode(OTHER_SALT, data)
    with pytest.raises(SerdeAuthError):  # another tenant's object, presented as ours
        decode(stage, theirs, data.nbytes, KEY)


def test_aesgcm_flipped_byte_or_wrong_master_key_fails_authentication(tmp_path: Path) -> None:
    stage = AesGcmSerde(key_file(tmp_path))
    data = kv_like(4096)
    encoded = bytearray(stage.encode(KEY, data))
    for position in (5, 30, len(encoded) // 2, len(encoded) - 1):  # header, nonce, ciphertext, tag
        bad = bytearray(encoded)
        bad[position] ^= 0x01
        with pytest.raises(SerdeError):
            decode(stage, bad, data.nbytes)
    other = AesGcmSerde(key_file(tmp_path, "other.key"))
    with pytest.raises(SerdeAuthError):
        decode(other, encoded, data.nbytes)
    moved = KEY._replace(chunk_hash=b"\x08" * 32)
    with pytest.raises(SerdeAuthError):  # the object under another key's name
        decode(stage, encoded, data.nbytes, moved)


@pytest.mark.parametrize(
    ("mode", "data", "message"),
    [
        (0o644, None, "readable or writable by other users"),
        (0o602, None, "readable or writable by other users"),
        (0o620, None, "readable or writable by other users"),
        (0o600, b"short", "holds 5 bytes"),
        (0o600, b"", "holds 0 bytes"),
    ],
)
def test_aesgcm_refuses_a_key_file_others_can_read_or_a_short_one(
    tmp_path: Path, mode: int, data: bytes | None, message: str
) -> None:
    with pytest.raises(L2ConfigError, match=message):
        AesGcmSerde(key_file(tmp_path, data=data, mode=mode))


def test_aesgcm_refuses_a_missing_key_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(L2ConfigError, match="No such file"):
        AesGcmSerde(str(tmp_path / "missing"))
    with pytest.raises(L2ConfigError, match="not a regular file"):
        AesGcmSerde(str(tmp_path))


def test_aesgcm_128_object_is_not_read_as_256(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    encoded = AesGcmSerde(path, aes_bits=128).encode(KEY, kv_like(100))
    with pytest.raises(SerdeMismatchError):
        AesGcmSerde(path, aes_bits=256).decoded_size(KEY, memoryview(encoded))


# -- fp8 ------------------------------------------------------------------------------------------------


def documented_bound(x: torch.Tensor, fp8: str, source: str) -> torch.Tensor:
    """The module docstring's bound, per value: (2^-(m+1) + 2^-p)|x| + A e_abs + tiny(source)."""
    _, _, _, m, e_abs = FP8_FORMATS[fp8]
    _, dtype, p = SOURCE_DTYPES[source]
    values = x.numel()
    runs = torch.zeros(-(-values // GROUP) * GROUP)
    runs[:values] = x.abs()
    amax = runs.view(-1, GROUP).amax(dim=1).repeat_interleave(GROUP)[:values]
    tiny = torch.finfo(dtype).smallest_normal * 2.0**-p
    return (2.0 ** -(m + 1) + 2.0**-p) * x.abs() + amax * e_abs + tiny


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("source", ["float16", "bfloat16"])
def test_fp8_round_trip_stays_within_the_documented_bound(fp8: str, source: str) -> None:
    dtype = SOURCE_DTYPES[source][1]
    data = kv_like(100_003, dtype)  # not a multiple of the run length
    stage = Fp8Serde(fp8, source)
    encoded = stage.encode(KEY, data)
    assert len(encoded) == stage.max_encoded_size(data.nbytes) < 0.52 * data.nbytes
    out = decode(stage, encoded, data.nbytes)
    x = torch.frombuffer(bytearray(data), dtype=dtype).float()
    y = torch.frombuffer(bytearray(out), dtype=dtype).float()
    error = (y - x).abs()
    assert bool((error <= documented_bound(x, fp8, source)).all())
    assert error.max() > 0  # lossy, really
    relative = (error / x.abs().clamp(min=1e-3)).mean()
    assert relative < (0.03 if fp8 == "float8_e4m3fn" else 0.06)


def test_fp8_keeps_zeros_and_tiny_runs_exact() -> None:
    x = torch.zeros(300, dtype=torch.float16)
    x[5] = 1.5
    data = memoryview(bytearray(x.view(torch.uint8).numpy().tobytes()))
    out = decode(Fp8Serde(source_dtype="float16"), Fp8Serde(source_dtype="float16").encode(KEY, data), 600)
    assert out == bytes(data)


def test_fp8_refuses_what_it_would_corrupt() -> None:
    stage = Fp8Serde(source_dtype="float16")
    nan = torch.tensor([1.0, float("nan")], dtype=torch.float16)
    with pytest.raises(SerdeError, match="NaN"):
        stage.encode(KEY, memoryview(bytearray(nan.view(torch.uint8).numpy().tobytes())))
    with pytest.raises(SerdeError, match="even"):
        stage.encode(KEY, memoryview(bytearray(3)))
    unknown = Fp8Serde(source_dtype="auto", dtype_of=lambda key: None)
    with pytest.raises(SerdeError, match="unknown"):
        unknown.encode(KEY, kv_like(10))
    fp32 = Fp8Serde(source_dtype="auto", dtype_of=lambda key: "torch.float32")
    with pytest.raises(SerdeError, match="float32"):
        fp32.encode(KEY, kv_like(10))


def test_fp8_auto_uses_the_registered_dtype() -> None:
    data = kv_like(1000, torch.bfloat16)
    stage = Fp8Serde(source_dtype="auto", dtype_of=lambda key: "torch.bfloat16")
    out = decode(stage, stage.encode(KEY, data), data.nbytes)
    y = torch.frombuffer(bytearray(out), dtype=torch.bfloat16).float()
    x = torch.frombuffer(bytearray(data), dtype=torch.bfloat16).float()
    assert bool(((y - x).abs() <= documented_bound(x, "float8_e4m3fn", "bfloat16")).all())


def test_fp8_objects_of_the_other_format_are_refused() -> None:
    encoded = Fp8Serde("float8_e5m2", "float16").encode(KEY, kv_like(256))
    with pytest.raises(SerdeMismatchError):
        Fp8Serde("float8_e4m3fn", "float16").decoded_size(KEY, memoryview(encoded))
