"""Everything the coordinator knows, in one object: members, L2 directory, quotas, event sequences, blend.

`FleetState` is what the HTTP adapter and the loops share. `snapshot()` / `restore()` give the checkpoint
form (quotas and the key directory, never instances: live servers re-register on their next heartbeat),
a plain JSON-able dict whose file handling is the adapter's.

Threading: not thread-safe; the coordinator touches it only from its event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmcache.domain.fleet_blend import BlendDirectory
from lmcache.domain.fleet_directory import KeyDirectory
from lmcache.domain.fleet_events import EventSequencer, L2Event, apply_events
from lmcache.domain.fleet_eviction import FleetQuotas
from lmcache.domain.fleet_registry import InstanceRegistry
from lmcache.domain.keys import ObjectKey

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.ports.clock import Clock

__all__ = ("CHECKPOINT_VERSION", "BatchResult", "FleetState", "decode_key_row", "encode_key_row")

CHECKPOINT_VERSION = 1


def encode_key_row(key: ObjectKey) -> list[Any]:
    """A compact JSON row for a key: `[hash_hex, model, kv_rank, group, salt]`."""
    return [key.chunk_hash.hex(), key.model_name, key.kv_rank, key.object_group_id, key.cache_salt]


def decode_key_row(row: Sequence[Any]) -> ObjectKey:
    """Inverse of `encode_key_row`, validating each field.

    Raises:
        ValueError: When the row is malformed (InvalidKeyError is a ValueError).
    """
    if len(row) != 5:
        raise ValueError(f"a key row has 5 fields, got {len(row)}")
    hex_hash, model, kv_rank, group, salt = row
    return ObjectKey.build(bytes.fromhex(str(hex_hash)), str(model), int(kv_rank), int(group), str(salt))


class BatchResult:
    """What one `POST /l2/events` did."""

    __slots__ = ("duplicate", "recorded")

    def __init__(self, recorded: int, duplicate: bool) -> None:
        self.recorded = recorded
        self.duplicate = duplicate


class FleetState:
    """The coordinator's state.

    Args:
        clock: Monotonic time for heartbeat expiry.
        instance_timeout_s: `--instance-timeout`.
        blend_chunk_size: `--blend-chunk-size`.
        blend_probe_stride: `--blend-probe-stride`.
        wall: Wall clock for displayed registration times.
    """

    def __init__(
        self,
        clock: Clock,
        instance_timeout_s: float,
        blend_chunk_size: int = 256,
        blend_probe_stride: int = 1,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.registry = (
            InstanceRegistry(clock, instance_timeout_s)
            if wall is None
            else InstanceRegistry(clock, instance_timeout_s, wall)
        )
        self.directory = KeyDirectory()
        self.quotas = FleetQuotas()
        self.sequencer = EventSequencer()
        self.blend = BlendDirectory(blend_chunk_size, blend_probe_stride)

    def register(self, instance_id: str, ip: str, http_port: int, **extra: Any) -> tuple[str, bool]:
        """Register an instance and restart its event numbering; see `InstanceRegistry.register`."""
        assigned, re_registered = self.registry.register(instance_id, ip, http_port, **extra)
        self.sequencer.reset(assigned)
        return assigned, re_registered

    def apply_batch(self, instance_id: str, seq: int, events: Sequence[L2Event]) -> BatchResult:
        """Apply one event batch unless it was applied before (same instance and seq)."""
        if not self.sequencer.accept(instance_id, seq):
            return BatchResult(0, duplicate=True)
        return BatchResult(apply_events(self.directory, instance_id, events), duplicate=False)

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint form: quotas and every key with its size and storer, each salt coldest first."""
        return {
            "version": CHECKPOINT_VERSION,
            "quotas": self.quotas.all_gb(),
            "keys": [[*encode_key_row(k), e.nbytes, e.instance_id] for k, e in self.directory.items()],
        }

    def restore(self, data: dict[str, Any]) -> int:
        """Load a checkpoint into an empty state; returns the keys restored.

        Raises:
            ValueError: When the checkpoint's version or a row is not understood.
        """
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {data.get('version')!r}")
        for salt, limit_gb in dict(data.get("quotas", {})).items():
            self.quotas.set(salt, float(limit_gb))
        rows = list(data.get("keys", []))
        for row in rows:
            if len(row) != 7:
                raise ValueError(f"a checkpoint key row has 7 fields, got {len(row)}")
            self.directory.store(decode_key_row(row[:5]), int(row[5]), str(row[6]))
        return len(rows)
