"""The `"serde"` of an `--l2-adapter` JSON: one stage (`{"type": ...}`, LMCache's form) or a chain (a list).

Stages run in order on store and in reverse on load (adapters/storage/serde_adapter.py). `fp8` and
`aesgcm` take LMCache 0.5.6's keys (`fp8_dtype`, `key_provider`, `aes_bits`, `master_key_path`,
`max_workers`); `fp8`'s `source_dtype` and the `zstd` stage are ours. A chain must make sense: `fp8`
reads 16-bit floats, so it comes first; compressing ciphertext gains nothing, so `zstd` never follows
`aesgcm`; each type appears once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lmcache.app.config.base import Section, flag

__all__ = ("AesGcmSerdeSpec", "Fp8SerdeSpec", "SerdeSpec", "ZstdSerdeSpec", "check_chain")

MAX_STAGES = 4
_WORKERS = "Threads that run this adapter's serde (a bounded pool); unset: min(4, CPU count)."


class _SerdeBase(Section):
    max_workers: int | None = flag(None, ge=1, le=64, description=_WORKERS)


class Fp8SerdeSpec(_SerdeBase):
    """fp8: 16-bit float KV stored as 8-bit floats with one fp32 scale per 128 values (lossy, ~0.52x)."""

    type: Literal["fp8"]
    fp8_dtype: Literal["float8_e4m3fn", "float8_e5m2"] = flag(
        "float8_e4m3fn", description="The 8-bit format: e4m3fn (more precision) or e5m2 (more range)."
    )
    source_dtype: Literal["auto", "float16", "bfloat16"] = flag(
        "auto",
        description="Element type of the KV bytes; auto: the dtype of the layout registered for the "
        "key's model (an object whose dtype is not known or not 16-bit is not stored by this adapter).",
    )


class AesGcmSerdeSpec(_SerdeBase):
    """aesgcm: AES-GCM at rest, one key per cache_salt derived from a master key (HKDF-SHA256)."""

    type: Literal["aesgcm"]
    key_provider: Literal["hkdf"] = flag("hkdf", description="How each cache_salt's key is obtained.")
    aes_bits: Literal[128, 256] = flag(128, description="AES key length in bits.")
    master_key_path: str = flag(
        min_length=1,
        description="File holding the master key (at least aes_bits/8 random bytes); must not be "
        "readable by others.",
    )


class ZstdSerdeSpec(_SerdeBase):
    """zstd: lossless compression, 16-bit values split into byte planes first (HDF5's shuffle)."""

    type: Literal["zstd"]
    level: int | None = flag(
        None,
        ge=-7,
        le=19,
        description="zstd's own level; unset: a preset for KV (fast strategy, minimal match search), as "
        "small as level 1 at about four times its speed.",
    )
    shuffle: bool = flag(True, description="Split 16-bit values into byte planes before compressing.")


SerdeSpec = Annotated[Fp8SerdeSpec | AesGcmSerdeSpec | ZstdSerdeSpec, Field(discriminator="type")]


def check_chain(stages: list[Fp8SerdeSpec | AesGcmSerdeSpec | ZstdSerdeSpec]) -> None:
    """Refuse a chain that cannot work or that defeats itself.

    Raises:
        ValueError: Empty, too long, a type twice, fp8 not first, or zstd after aesgcm.
    """
    names = [stage.type for stage in stages]
    if not names:
        raise ValueError("a serde chain needs at least one stage")
    if len(names) > MAX_STAGES:
        raise ValueError(f"a serde chain has at most {MAX_STAGES} stages (got {len(names)})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"serde type {twice[0]!r} appears more than once")
    if "fp8" in names and names[0] != "fp8":
        raise ValueError("fp8 must be the first serde stage (it reads 16-bit floats)")
    if "zstd" in names and "aesgcm" in names and names.index("zstd") > names.index("aesgcm"):
        raise ValueError("zstd after aesgcm compresses ciphertext: put zstd before aesgcm")
