"""torch for the server, imported after the ready line instead of before it.

`import torch` takes ~1 s of the ~1.9 s from `lmcache server` to its ready line on a 2-core VM, and no
start-up step needs it on a machine without a GPU: the L1 arena is an mmap, the sockets are ZMQ and
Litestar. Server modules therefore name torch through `torch` below, a stand-in that imports the real
module on first use; the runtime starts `preload()` right after the ready line, so an engine that
registers a moment later finds it loaded (a request that comes sooner waits for the import). Modules
that build torch objects when they are constructed (the fp8 serde stage's tables) still load it at start-up.

Start-up questions about CUDA (device line, pinning, inert-flag warnings) need torch only where CUDA can
exist: `cuda_possible()` looks for the device nodes an NVIDIA, ROCm or WSL driver creates, and only then
asks torch (at once, as before).

`configure(threads=...)` is the server's intra-op thread count. It is applied once torch is loaded, before
any caller gets it, so no thread runs a torch op under the default count: ATen fixes each thread's count at
its first parallel op. Processes that never call it (vLLM's, with the connector) keep torch's default.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

__all__ = ("configure", "cuda_available", "cuda_possible", "load", "loaded", "preload", "torch")

logger = logging.getLogger(__name__)

CUDA_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL2

_lock = threading.Lock()
_module: ModuleType | None = None
_threads: int | None = None


def configure(*, threads: int) -> None:
    """Run torch's intra-op work on `threads` threads in this process, now or once torch loads."""
    global _threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    with _lock:
        _threads = threads
        if _module is not None:
            _module.set_num_threads(threads)


def load() -> ModuleType:
    """The torch module, imported (and configured) on the first call; later calls return it at once."""
    global _module
    module = _module
    if module is not None:
        return module
    with _lock:
        if _module is None:
            import torch as real

            if _threads is not None:
                real.set_num_threads(_threads)
            _module = real
        return _module


def loaded() -> bool:
    """Whether torch has been imported through `load()`."""
    return _module is not None


def preload(then: Callable[[], object] | None = None) -> threading.Thread:
    """Import torch on a daemon thread (after the ready line), then call `then`; the thread ends after."""

    def run() -> None:
        started = time.perf_counter()
        try:
            load()
        except Exception:  # the first real use raises the same error where it can be answered
            logger.exception("Loading torch in the background failed")
            return
        if then is not None:
            then()
        logger.debug("torch loaded in the background in %.2f s", time.perf_counter() - started)

    thread = threading.Thread(target=run, name="lmcache-torch-preload", daemon=True)
    thread.start()
    return thread


def cuda_possible(nodes: tuple[str, ...] | None = None) -> bool:
    """Whether a GPU driver's device node (`CUDA_NODES`) exists; False means CUDA cannot be available."""
    return any(Path(node).exists() for node in (CUDA_NODES if nodes is None else nodes))


def cuda_available() -> bool:
    """`torch.cuda.is_available()`, without importing torch where no GPU driver is present."""
    return cuda_possible() and bool(load().cuda.is_available())


class _Torch:
    """Stands for the torch module: the first access of each attribute loads torch and keeps the value."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(load(), name)
        setattr(self, name, value)  # later accesses are plain attribute reads
        return value


torch: Any = _Torch()
