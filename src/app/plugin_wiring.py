"""The runtime plugins `--runtime-plugin-locations` names, and the environment they run in.

The container (`container.py`) builds the supervisor over them, only when there is at least one.

Each location is a script or a directory. A `.py` file runs with the server's interpreter, an executable
file runs directly, anything else is refused (exit 2, naming the file). A directory launches every such
file directly inside it, in name order; names starting with `.` or `_` (helper modules) and
subdirectories are left alone. The check runs at start-up, before anything is allocated.

The environment of every plugin (the names LMCache 0.5.6 uses):
- `LMCACHE_RUNTIME_PLUGIN_CONFIG`: the whole resolved server configuration as JSON (sections `mp`, `l1`,
  `l2`, `http`, `observability`, ...), plus `http_config` (`http_host`, `http_port`, `http_socket_path`)
  and `runtime_plugin_extra_config`, the two keys 0.5.6's plugins read;
- `LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG`: the `--runtime-plugin-config` JSON object;
- `LMCACHE_RUNTIME_PLUGIN_ROLE` (""), `..._WORKER_COUNT` ("1"), `..._WORKER_ID` ("0"), the same under the
  legacy `LMCACHE_PLUGIN_*` names, and `PYTHONUNBUFFERED=1` so a Python plugin's lines arrive at once.
The configuration is not redacted: plugins are code the operator chose to run beside the server, and an
environment is readable only by the same user.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lmcache.adapters.plugins.supervisor import PluginSpec
from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lmcache.app.config import ServerConfig

__all__ = ("discover_plugins", "plugin_environment")

logger = logging.getLogger(__name__)
_FLAG = "--runtime-plugin-locations"
_ENV_MAX = 120 * 1024  # Linux refuses a single environment string over 128 KiB (MAX_ARG_STRLEN)


def _spec(path: Path, names: set[str]) -> PluginSpec:
    if path.suffix == ".py":
        argv: tuple[str, ...] = (sys.executable, str(path))
    elif os.access(path, os.X_OK):
        argv = (str(path),)
    else:
        raise ConfigError(f"{_FLAG}: {path} is neither a .py script nor an executable file")
    name = path.name if path.name not in names else f"{path.parent.name}/{path.name}"
    names.add(name)
    return PluginSpec(name, path, argv)


def discover_plugins(locations: list[str]) -> list[PluginSpec]:
    """The plugins the locations name, in order.

    Raises:
        ConfigError: A location is missing, or a file is neither a `.py` script nor executable.
    """
    specs: list[PluginSpec] = []
    names: set[str] = set()
    for location in locations:
        path = Path(location).expanduser().resolve()
        if path.is_file():
            specs.append(_spec(path, names))
        elif path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
            if not found:
                logger.warning("%s: %s holds no plugin", _FLAG, path)
            specs.extend(_spec(p, names) for p in found)
        else:
            raise ConfigError(f"{_FLAG}: {location} does not exist (or is not a file or directory)")
    return specs


def plugin_environment(config: ServerConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The plugins' environment: `base` plus the variables of the module docstring.

    Raises:
        ConfigError: The configuration is too large for one environment variable.
    """
    extra = config.mp.runtime_plugin_config
    doc = config.model_dump(mode="json")
    doc["http_config"] = {
        "http_host": config.http.http_host,
        "http_port": config.http.http_port,
        "http_socket_path": None,
    }
    doc["runtime_plugin_extra_config"] = extra
    full = json.dumps(doc, separators=(",", ":"))
    if len(full) > _ENV_MAX:
        raise ConfigError(f"{_FLAG}: the server configuration ({len(full)} bytes) is too large to pass")
    env = dict(base)
    for prefix in ("LMCACHE_RUNTIME_PLUGIN_", "LMCACHE_PLUGIN_"):
        env[f"{prefix}CONFIG"] = full
        env[f"{prefix}ROLE"] = ""
        env[f"{prefix}WORKER_COUNT"] = "1"
        env[f"{prefix}WORKER_ID"] = "0"
    env["LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG"] = json.dumps(extra, separators=(",", ":"))
    env["PYTHONUNBUFFERED"] = "1"
    return env
