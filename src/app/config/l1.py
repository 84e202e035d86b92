"""L1 memory, GDS L1, L1 lock TTLs and eviction (spec: configuration-reference.md, L1 sections)."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from lmcache.app.config.base import Section, flag
from lmcache.domain.eviction import EvictionPolicyName

_MIN_ALIGN = 8  # the widest KV element, and the word the run copies move

__all__ = ("EvictionPolicy", "L1Config")

EvictionPolicy = EvictionPolicyName  # the names live with the policies (domain/eviction.py)


class L1Config(Section):
    """The L1 arena: size and allocation, lock TTLs, and the eviction policy that keeps it in budget."""

    l1_size_gb: float = flag(
        gt=0,
        metavar="GiB",
        description="L1 capacity in GiB (2^30 bytes; the spec's GB are binary): the CPU arena, or the GDS "
        "slab file when --gds-l1-path is set.",
    )
    l1_use_lazy: bool = flag(
        True,
        description="Pin L1 lazily in --l1-init-size-gb steps as it fills (CUDA hosts); without CUDA "
        "the arena is anonymous memory, lazy by nature.",
    )
    l1_init_size_gb: float = flag(
        20, gt=0, metavar="GiB", description="First (and step) size of lazy pinning, in GiB."
    )
    l1_align_bytes: int = flag(
        4096, gt=0, metavar="BYTES", description="Alignment of every L1 extent; a power of two, at least 8."
    )
    l1_devdax_path: Path | None = flag(
        None,
        metavar="PATH",
        description="A /dev/dax device or mmap-able file backing the arena; needs --no-l1-use-lazy, and "
        '--shm-name "" when the engine-driven path is loaded.',
    )
    gds_l1_path: Path | None = flag(
        None,
        metavar="DIR",
        description="NVMe directory for a GPUDirect Storage L1 slab (<DIR>/lmcache_gds_slab.bin) replacing "
        "the DRAM arena; needs a working cuFile stack.",
    )
    gds_l1_use_direct_io: bool = flag(True, description="Open the GDS slab with O_DIRECT.")
    l1_write_ttl_seconds: float = flag(
        600, gt=0, metavar="SECONDS", description="Lifetime of an object's write lock."
    )
    l1_read_ttl_seconds: float = flag(
        300, gt=0, metavar="SECONDS", description="Lifetime of an object's read lock."
    )
    eviction_policy: EvictionPolicy = flag(
        description="L1 eviction policy: LRU; IsolatedLRU (one LRU per cache_salt, limits from /quota, a "
        "salt without a quota gets 0 bytes); noop (L1 as a pure write buffer)."
    )
    eviction_trigger_watermark: float = flag(
        0.8, ge=0, le=1, metavar="RATIO", description="L1 usage ratio that starts an eviction cycle."
    )
    eviction_ratio: float = flag(
        0.2, ge=0, le=1, metavar="RATIO", description="Share of allocated L1 bytes freed per eviction cycle."
    )

    @field_validator("l1_align_bytes")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1) or value < _MIN_ALIGN:  # KV elements are up to 8 bytes; copies move words
            raise ValueError(f"must be a power of two >= {_MIN_ALIGN} (got {value})")
        return value
