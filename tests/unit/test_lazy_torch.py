"""lazy_torch: torch loads on first use with the server's thread count; CUDA checks skip it without a driver.

Checks that need a process where torch is not yet imported run in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters import lazy_torch

if TYPE_CHECKING:
    from pathlib import Path


def _fresh(code: str) -> str:
    """Run `code` in a new interpreter; its stdout."""
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_server_modules_does_not_import_torch() -> None:
    out = _fresh(
        "import sys\n"
        "import lmcache.app.container, lmcache.app.runtime, lmcache.adapters.transfer.cpu_kv\n"
        "import lmcache.adapters.transfer.chunk_codec, lmcache.adapters.transfer.blend_scatter\n"
        "print('torch' in sys.modules)"
    )
    assert out == "False"


def test_cuda_available_needs_no_torch_without_a_driver_node() -> None:
    out = _fresh(
        "import sys\n"
        "from lmcache.adapters import lazy_torch\n"
        "lazy_torch.CUDA_NODES = ('/nonexistent/nvidiactl',)\n"
        "print(lazy_torch.cuda_available(), 'torch' in sys.modules, lazy_torch.loaded())"
    )
    assert out == "False False False"


def test_the_stand_in_loads_torch_with_the_configured_thread_count_before_first_use() -> None:
    out = _fresh(
        "import sys, threading\n"
        "from lmcache.adapters import lazy_torch\n"
        "lazy_torch.configure(threads=1)\n"
        "assert 'torch' not in sys.modules\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(lazy_torch.torch.get_num_threads()))\n"
        "t.start(); t.join()\n"
        "print(seen[0], lazy_torch.loaded(), lazy_torch.torch.uint8 is sys.modules['torch'].uint8)"
    )
    assert out == "1 True True"


def test_preload_loads_torch_then_calls_back() -> None:
    out = _fresh(
        "import sys\n"
        "from lmcache.adapters import lazy_torch\n"
        "called = []\n"
        "lazy_torch.preload(then=lambda: called.append('torch' in sys.modules)).join(60)\n"
        "print(lazy_torch.loaded(), called)"
    )
    assert out == "True [True]"


def test_configure_after_loading_applies_at_once() -> None:
    before = torch.get_num_threads()
    try:
        lazy_torch.load()
        lazy_torch.configure(threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        lazy_torch._threads = None  # this process is a test run, not a server


def test_configure_refuses_fewer_than_one_thread() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        lazy_torch.configure(threads=0)


def test_stand_in_forwards_and_keeps_attributes() -> None:
    assert lazy_torch.torch.float16 is torch.float16
    assert "float16" in vars(lazy_torch.torch)  # the next access is a plain attribute read
    assert getattr(lazy_torch.torch, "no_such_attribute", None) is None
    with pytest.raises(AttributeError):
        _ = lazy_torch.torch.no_such_attribute


def test_cuda_possible_follows_the_driver_nodes(tmp_path: Path) -> None:
    node = tmp_path / "nvidiactl"
    assert not lazy_torch.cuda_possible((str(node),))
    node.touch()
    assert lazy_torch.cuda_possible((str(tmp_path / "absent"), str(node)))
