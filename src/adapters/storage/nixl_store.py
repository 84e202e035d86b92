"""nixl_store / nixl_store_dynamic: objects moved between memory and files by NIXL's storage backends.

The layout, index, quarantine and listing are fs's (one file per object under `file_path`, staged and
renamed into place, rebuilt at start-up); the bytes move through a NIXL agent: DRAM descriptors for the
header and the caller's buffer (registered as `[(addr, len, 0, "")]`, the L1 arena once at start-up,
other buffers per call) and FILE descriptors for the object file, one WRITE or READ transfer per object.
`nixl_store` holds at most `pool_size` objects (its descriptor pool); `nixl_store_dynamic` is bounded by
`backend_params.max_capacity_gb`.

Backends: POSIX runs anywhere. GDS, GDS_MT, OBJ, HF3FS, AZURE_BLOB need libraries or services this
build may lack; start-up then fails with the backend's name and the missing library (the plugin's own
loader error, e.g. `libcufile.so.0`). Departure: `use_direct_io` is accepted but files are opened
without O_DIRECT (NIXL's POSIX backend reads and writes the caller's unaligned L1 views).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcache.adapters.storage import _fs_io
from lmcache.adapters.storage._native_mem import RegisteredRanges, address_of
from lmcache.adapters.storage.errors import L2ConfigError
from lmcache.adapters.storage.fs import FsL2Adapter
from lmcache.adapters.storage.object_format import (
    MIN_READ,
    CorruptObjectError,
    check_payload_fits,
    encode_header,
    parse_header,
    verify_payload,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.domain.keys import ObjectKey

__all__ = ("NixlDynamicL2Adapter", "NixlL2Adapter", "nixl_api")

_XFER_TIMEOUT_S = 60.0


def nixl_api() -> Any:
    """NIXL's Python API from the meta package or a backend wheel (nixl_cu13, nixl_cu12)."""
    for name in ("nixl._api", "nixl_cu13._api", "nixl_cu12._api"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.split(".")[0]):
                raise
    raise ModuleNotFoundError("No module named 'nixl'", name="nixl")


def _missing_library(api: Any, backend: str) -> str:
    """Why a backend plugin does not load: its loader error (a missing library), or that it is absent."""
    plugins = Path(api.__file__).resolve().parent.parent.glob(f".nixl*.libs/plugins/libplugin_{backend}.so")
    for plugin in plugins:
        try:
            ctypes.CDLL(str(plugin))
        except OSError as exc:
            return str(exc).split(":")[0] + " is missing"
        return "its plugin loads but refused to start"
    return "this NIXL build has no such plugin"


class NixlL2Adapter(FsL2Adapter):
    """nixl_store; see the module docstring."""

    def __init__(
        self,
        backend: str,
        backend_params: dict[str, str] | None = None,
        pool_size: int = 0,
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        params = dict(backend_params or {})
        self.backend = backend
        self.max_objects = pool_size
        api = nixl_api()
        self.agent_name = f"lmcache-{os.getpid()}-{id(self):x}"
        self.agent = api.nixl_agent(
            self.agent_name,
            api.nixl_agent_config(enable_prog_thread=False, enable_listen_thread=False, backends=[]),
        )
        if backend not in self.agent.get_plugin_list():
            raise L2ConfigError(
                f"nixl backend {backend!r} is not available: {_missing_library(api, backend)}"
            )
        init = {k: v for k, v in params.items() if k not in ("file_path", "use_direct_io", "max_capacity_gb")}
        try:
            self.agent.create_backend(backend, init)
        except Exception as exc:
            raise L2ConfigError(
                f"nixl backend {backend!r} cannot start: {_missing_library(api, backend)} ({exc})"
            ) from exc
        if "file_path" not in params:
            raise L2ConfigError(f"nixl backend {backend!r}: only file backends are supported (file_path)")
        self._memory = RegisteredRanges(self._register, self._unregister)
        self._agent_lock = threading.Lock()
        capacity_gb = float(params.get("max_capacity_gb", "0") or 0)
        super().__init__(
            params["file_path"],
            max_capacity_gb=capacity_gb,
            shared=shared,
            eviction=eviction,
            persist_enabled=persist_enabled,
        )

    def _register(self, address: int, size: int) -> Any:
        with self._agent_lock:
            return self.agent.register_memory([(address, size, 0, "")], "DRAM")

    def _unregister(self, _address: int, _size: int, handle: Any) -> None:
        with self._agent_lock:
            self.agent.deregister_memory(handle)

    def register_l1(self, address: int, size: int) -> None:
        """Register the L1 arena once (copy-free transfers of L1 extents)."""
        self._memory.add_permanent(address, size)

    def _admit(self, key: ObjectKey, nbytes: int) -> int:
        if self.max_objects and len(self._index) >= self.max_objects:  # in-flight stores not counted
            self.counters.capacity_rejections += 1
            self.counters.store_failures += 1
            return 0
        return super()._admit(key, nbytes)

    def _transfer(self, op: str, pieces: list[tuple[int, int]], fd: int, total: int, base: int = 0) -> None:
        """One NIXL transfer between memory `pieces` (address, size) and the file, contiguous from `base`."""
        spans = [(a, n) for a, n in pieces if n]
        offsets = np.cumsum([base] + [n for _, n in spans[:-1]]).tolist()
        with self._memory.hold(spans):
            with self._agent_lock:
                file_reg = self.agent.register_memory([(0, total, fd, "")], "FILE")
                local = self.agent.get_xfer_descs([(a, n, 0) for a, n in spans], "DRAM")
                remote = self.agent.get_xfer_descs(
                    [(o, n, fd) for o, (_, n) in zip(offsets, spans, strict=True)], "FILE"
                )
                handle = self.agent.initialize_xfer(op, local, remote, self.agent_name)
                state = self.agent.transfer(handle)
            try:
                deadline = time.monotonic() + _XFER_TIMEOUT_S
                while state not in ("DONE", "ERR"):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"nixl {op} did not finish in {_XFER_TIMEOUT_S} s")
                    time.sleep(0.0001)
                    with self._agent_lock:
                        state = self.agent.check_xfer_state(handle)
                if state == "ERR":
                    raise OSError(f"nixl {op} transfer failed")
            finally:
                with self._agent_lock:
                    self.agent.release_xfer_handle(handle)
                    self.agent.deregister_memory(file_reg)

    def _write_file(
        self, key: ObjectKey, buf: memoryview, tmp: str, final: str, cancelled: threading.Event
    ) -> int | bool:
        """As fs, the bytes moved by one NIXL WRITE from the header and the caller's buffer."""
        header = np.frombuffer(encode_header(key, buf), np.uint8).copy()
        total = header.nbytes + buf.nbytes
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, _fs_io.FILE_MODE)
        try:
            os.ftruncate(fd, total)
            self._transfer(
                "WRITE", [(address_of(header), header.nbytes), (address_of(buf), buf.nbytes)], fd, total
            )
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        os.close(fd)
        if cancelled.is_set():
            Path(tmp).unlink(missing_ok=True)
            return False
        _fs_io.make_dir(Path(final).parent)
        Path(tmp).rename(final)
        return total

    def _load_job(
        self, key: ObjectKey, buf: memoryview, cancelled: threading.Event, exact: bool
    ) -> Callable[[], int | bool]:
        fallback = super()._load_job(key, buf, cancelled, exact)  # fs's reader classifies and quarantines
        path = self._path(key)

        def job() -> int | bool:
            if cancelled.is_set():
                return False
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                header = parse_header(os.pread(fd, MIN_READ, 0))
                check_payload_fits(header.payload_size, buf, exact)
                dest = buf[: header.payload_size]
                if size != header.total_size:
                    return fallback()
                if dest.nbytes:  # NIXL refuses an empty descriptor list; an empty payload has nothing to move
                    self._transfer("READ", [(address_of(dest), dest.nbytes)], fd, size, header.header_len)
            except CorruptObjectError:
                return fallback()
            finally:
                os.close(fd)
            try:
                verify_payload(header, key, dest)
            except CorruptObjectError:
                return fallback()
            return header.payload_size

        return job

    async def close(self) -> None:
        """Close as fs does, then release the agent's registrations."""
        await super().close()
        self._memory.close()


class NixlDynamicL2Adapter(NixlL2Adapter):
    """nixl_store_dynamic: no descriptor pool; bounded by backend_params.max_capacity_gb."""

    def __init__(
        self,
        backend: str,
        backend_params: dict[str, str],
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        super().__init__(backend, backend_params, 0, shared, eviction, persist_enabled)
