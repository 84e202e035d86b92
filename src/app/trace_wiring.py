"""`--trace-level storage`: the recorder's output path and the storage configuration it records.

The container (`storage_container.py`) builds the recorder, and chooses the traced storage engine (the
subclasses of `domain/trace_hooks.py` instead of the plain `l1`, `eviction_loop`, `prefetch_controller`,
`store_controller` and `quotas`) from the same argument lists; with tracing off the plain classes run
and pay nothing.

The header's storage configuration is `{"chunk_size", "l1", "l2"}` as JSON (sorted keys, secrets
redacted), which `lmcache trace replay` rebuilds its engine from. `--trace-output` may name a file, which
must not exist yet, or an existing directory; unset, the file is
`$TMPDIR/lmcache-trace-<pid>-<UTC YYYYmmdd-HHMMSS>.lct`.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lmcache import __version__
from lmcache.adapters.http.config_view import redact_secrets
from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from lmcache.app.config import ServerConfig

__all__ = ("PRODUCER", "first_trace_path", "storage_config_json", "trace_level_meta", "trace_path")

PRODUCER = f"lmcache-server {__version__}"


def trace_path(output: Path | None, pid: int, now: datetime) -> Path:
    """Where the first trace file goes (module docstring).

    Raises:
        ConfigError: `--trace-output` names a file that already exists, or a missing directory.
    """
    name = f"lmcache-trace-{pid}-{now.astimezone(UTC).strftime('%Y%m%d-%H%M%S')}.lct"
    if output is None:
        return Path(tempfile.gettempdir()) / name
    output = output.expanduser()
    if output.is_dir():
        return output / name
    if output.exists() or output.is_symlink():
        raise ConfigError(f"--trace-output: {output} already exists (a trace is never overwritten)")
    if not output.parent.is_dir():
        raise ConfigError(f"--trace-output: directory {output.parent} does not exist")
    return output


def storage_config_json(config: ServerConfig) -> str:
    """The storage configuration a trace's header carries (and its replay rebuilds)."""
    doc = {
        "chunk_size": config.mp.chunk_size,
        "l1": config.l1.model_dump(mode="json"),
        "l2": config.l2.model_dump(mode="json"),
    }
    return json.dumps(redact_secrets(doc), sort_keys=True, separators=(",", ":"))


def first_trace_path(output: Path | None) -> Path:
    """Where this process's first trace file goes, named for now (ConfigError as `trace_path`)."""
    return trace_path(output, os.getpid(), datetime.now(UTC))


def trace_level_meta(config: ServerConfig) -> dict[str, object]:
    """The producer and identity a trace's header carries."""
    return {"producer": PRODUCER, "instance_id": config.mp.instance_id, "chunk_size": config.mp.chunk_size}
