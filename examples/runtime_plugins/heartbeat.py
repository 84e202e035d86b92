#!/usr/bin/env python3
"""Example runtime plugin: posts a heartbeat about its lmcache server to a URL, every few seconds.

Launch it with the server:

    lmcache server --l1-size-gb 4 --eviction-policy LRU \
        --runtime-plugin-locations examples/runtime_plugins/heartbeat.py \
        --runtime-plugin-config '{"plugin.heartbeat.url": "http://localhost:5000/heartbeat",
                                  "plugin.heartbeat.interval_seconds": 10}'

Extra-config keys (LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG):
  plugin.heartbeat.url               where to POST (required; without it the plugin exits 0 and is
                                     not restarted)
  plugin.heartbeat.interval_seconds  seconds between heartbeats (default 10, at least 1)

Each heartbeat is a JSON object: `instance_id`, `timestamp`, `healthy` (the server's /healthcheck
answered 200), `l1_used_bytes` and `l1_total_bytes` (from /status). The server's HTTP address comes from
`http_config` in LMCACHE_RUNTIME_PLUGIN_CONFIG. Only the standard library is used, so the plugin runs
under any Python 3.11+. A failed POST is printed (it lands in the server log) and retried next time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

stop = threading.Event()


def _server_url(config: dict) -> str:
    http = config.get("http_config") or {}
    host = http.get("http_host") or "localhost"
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    return f"http://{host}:{http.get('http_port', 8080)}"


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def beat(server: str, target: str, instance_id: str) -> None:
    """Collect the server's state and POST one heartbeat."""
    health, _ = _get_json(server + "/healthcheck")
    _, status = _get_json(server + "/status")
    l1 = (status.get("storage_manager") or {}).get("l1_manager") or {}
    body = {
        "instance_id": instance_id,
        "timestamp": time.time(),
        "healthy": health == 200,
        "l1_used_bytes": l1.get("memory_used_bytes"),
        "l1_total_bytes": l1.get("memory_total_bytes"),
    }
    request = urllib.request.Request(
        target, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            reply.read()
    except (OSError, ValueError) as exc:
        print(f"heartbeat to {target} failed: {exc}", flush=True)


def main() -> int:
    """Read the configuration, then beat until SIGTERM."""
    config = json.loads(os.environ.get("LMCACHE_RUNTIME_PLUGIN_CONFIG") or "{}")
    extra = json.loads(os.environ.get("LMCACHE_RUNTIME_PLUGIN_EXTRA_CONFIG") or "{}")
    target = extra.get("plugin.heartbeat.url")
    if not target:
        print("no plugin.heartbeat.url in --runtime-plugin-config; nothing to do", flush=True)
        return 0
    interval = max(1.0, float(extra.get("plugin.heartbeat.interval_seconds", 10)))
    server = _server_url(config)
    instance_id = str((config.get("mp") or {}).get("instance_id", ""))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"posting heartbeats of {server} to {target} every {interval:g} s", flush=True)
    while not stop.is_set():
        beat(server, target, instance_id)
        stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
