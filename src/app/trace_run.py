"""Opening a replay input (an `.lct` trace or a lookup-hash log) and replaying it on one configuration.

Shared by `lmcache trace info|replay|sweep` (the sweep's worker processes call `replay_one`) and by
`lmcache bench server --trace`. A trace whose header names no producer of ours (LMCache 0.5.6's) has no
eviction-loop steps recorded, so its replay runs one every 0.1 s of trace time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcache.adapters.trace.lookup_log_source import is_lookup_log, lookup_log_files, play_lookup_log
from lmcache.adapters.trace.player import play
from lmcache.adapters.trace.reader import open_series, series_paths
from lmcache.app.config.errors import ConfigError
from lmcache.app.replay_container import replay_engine
from lmcache.app.trace_config import OVERRIDE_FLAGS, recorded_config, replay_settings

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from lmcache.adapters.trace.format import Header
    from lmcache.adapters.trace.player import PlayResult
    from lmcache.domain.trace_replay import ReplayEngine, ReplaySettings

__all__ = ("Source", "open_source", "overrides_of", "replay_one", "settings_for")


@dataclass(frozen=True)
class Source:
    """A replay input: `kind` is "lct" (with its header) or "log" (a lookup-hash log)."""

    kind: str
    paths: tuple[Path, ...]
    header: Header | None = None
    chunk_bytes: int | None = None

    @property
    def ours(self) -> bool:
        """Whether our server recorded it (its eviction-loop steps are in the trace)."""
        return self.header is not None and str(self.header.level_meta.get("producer", "")).startswith(
            "lmcache"
        )


def open_source(inputs: Sequence[str | Path], chunk_bytes: int | None) -> Source:
    """Identify and check the inputs (the files are reopened by whoever replays them).

    Raises:
        TraceError: An unreadable or corrupt header, or mixed parts.
        ConfigError: A lookup-hash log without `--chunk-bytes`.
    """
    if is_lookup_log(inputs):
        if chunk_bytes is None:
            raise ConfigError("--chunk-bytes: required for a lookup-hash log (it records no object sizes)")
        return Source("log", tuple(lookup_log_files(inputs)), None, chunk_bytes)
    paths = [Path(p) for p in inputs]
    if len(paths) == 1:
        paths = series_paths(paths[0])  # a rotated trace named by its first file: all of its parts
    files = open_series(paths)
    try:
        return Source("lct", tuple(f.path for f in files), files[0].header)
    finally:
        for f in files:
            f.close()


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The engine overrides given on the command line (flag dest -> value)."""
    return {name: getattr(args, name) for name in OVERRIDE_FLAGS if getattr(args, name, None) is not None}


def settings_for(source: Source, overrides: dict[str, Any], no_l2: bool = False) -> ReplaySettings:
    """The engine of one replay of `source` (ConfigError on a bad or missing value)."""
    recorded = recorded_config(source.header.sm_config_json) if source.header is not None else {}
    return replay_settings(recorded, overrides, no_l2=no_l2, synthetic_steps=not source.ours)


def replay_one(
    source: Source, settings: ReplaySettings, allow_truncated: bool = False
) -> tuple[ReplayEngine, PlayResult]:
    """Replay `source` on a fresh engine built from `settings`."""
    engine = replay_engine(settings)
    if source.kind == "log":
        assert source.chunk_bytes is not None
        return engine, play_lookup_log(source.paths, engine, source.chunk_bytes)
    files = open_series(source.paths)
    try:
        return engine, play(files, engine, allow_truncated=allow_truncated)
    finally:
        for f in files:
            f.close()
