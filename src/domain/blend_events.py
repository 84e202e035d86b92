"""CacheBlend events for telemetry: matches found/partial/stale, re-rotated bytes, scatter time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ("BlendLookupFinished", "BlendScattered", "MatchSource")

MatchSource = Literal["local", "fleet", "fleet_fallback", "none"]


@dataclass(frozen=True, slots=True)
class BlendLookupFinished:
    """A `cb_unified_lookup` answered.

    Attributes:
        model_name: The request's model.
        source: Where the candidates came from (`fleet_fallback`: the coordinator timed out or failed).
        candidates: Candidates past the prefix (and segmented) filters.
        found: Candidate chunks fully loaded and locked.
        partial: Candidate chunks present but not all loaded (released, no strike).
        stale: Candidate chunks absent somewhere (struck).
        returned: Matches in the reply after overlap resolution.
        segmented: Chunks reported in `segmented_prefix_segments`.
        prefix_tokens: `prefix_coverage_tokens`.
        duration_s: From the first call to the answer.
    """

    model_name: str
    source: MatchSource
    candidates: int
    found: int
    partial: int
    stale: int
    returned: int
    segmented: int
    prefix_tokens: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class BlendScattered:
    """A `cb_retrieve_pre_computed` wrote (or failed to write) matches into an engine's blocks.

    Attributes:
        model_name: The instance's model.
        matches: Matches written.
        bytes_written: Bytes written into the engine's blocks.
        bytes_rotated: Bytes of K re-rotated on the way.
        duration_s: Time spent in the scatter itself.
        ok: False when the scatter failed after its checks.
    """

    model_name: str
    matches: int
    bytes_written: int
    bytes_rotated: int
    duration_s: float
    ok: bool
