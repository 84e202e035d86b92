"""`lmcache server` reaches its ready line before importing torch, loads it right after, and serves at once.

The server runs in a fresh interpreter where importing torch fails until the runtime asks for the
background load (lazy_torch.preload), so any start-up step that still needs torch fails the start.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lmcache.adapters import lazy_torch
from tests.integration.server.conftest import Engine, free_ports, hit_chunks, key, run_server, tokens_for

_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, os, signal, sys
    blocked = [True]

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" and blocked[0]:
                raise ImportError("torch imported before the ready line")
            return None

    sys.meta_path.insert(0, Blocker())
    from lmcache.adapters import lazy_torch
    from lmcache.app import cli

    real_preload = lazy_torch.preload

    def preload(then=None):
        print("ready without torch:", "torch" not in sys.modules, flush=True)
        blocked[0] = False
        thread = real_preload(then)
        thread.join(120)
        print("loaded after:", lazy_torch.loaded(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return thread

    lazy_torch.preload = preload
    rpc, http, prom = sys.argv[1:4]
    sys.argv = ["lmcache", "server", "--l1-size-gb", "0.05", "--host", "127.0.0.1", "--port", rpc,
                "--http-host", "127.0.0.1", "--http-port", http, "--prometheus-port", prom,
                "--eviction-policy", "LRU"]
    sys.exit(cli.main())
    """
)


@pytest.mark.skipif(lazy_torch.cuda_possible(), reason="a GPU driver node exists: start-up asks torch")
def test_ready_line_comes_before_torch_is_imported() -> None:
    ports = [str(p) for p in free_ports(3)]
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *ports], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ready without torch: True" in done.stdout, done.stderr[-3000:]
    assert "loaded after: True" in done.stdout
    assert "Loading torch in the background failed" not in done.stderr


def test_an_engine_registering_right_after_the_ready_line_stores_and_hits() -> None:
    with run_server() as server, server.client() as c:  # no pause: the background import may still run
        engine = Engine(c)
        engine.register()
        assert c.store(key(tokens_for(7), "s", end=512), 1000, [list(range(8, 40))], b"")[1]
        assert hit_chunks(c, tokens_for(7), "l") == 2
        engine.close()
