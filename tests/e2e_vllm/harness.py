"""Processes and clients for running a real vLLM (CPU build) against a real `lmcache server`.

Shared by the end-to-end test and `benchmarks/vllm_e2e.py`. vLLM lives in its own virtualenv
(`scripts/vllm-venv`), so it is only ever started as a subprocess; everything here runs in the project's
.venv and talks to it over HTTP on loopback ports. Every process is started in its own session and stopped
by its PID (SIGTERM, then SIGKILL of that session's group), so nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from benchmarks.server_process import ServerProcess, free_port, free_ports
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e_vllm.shm_segments import remove_segments, session_segments

REPO = Path(__file__).resolve().parents[2]
MAKE_MODEL = Path(__file__).with_name("make_model.py")
LMCACHE_BIN = REPO / ".venv" / "bin" / "lmcache"
#: vLLM's log line when its registered `LMCacheMPConnector` resolved to the class of the installed lmcache.
VLLM_USES_OURS = "Using external LMCacheMPConnector from lmcache.integration.vllm.lmcache_mp_connector"
#: The environment vLLM's CPU build needs here (issue 9); HF_HUB_OFFLINE keeps it off the hub. vLLM reserves
#: one more core for its processes when a KV connector is configured, which on 2 cores leaves the model 2
#: threads instead of 1; a fixed reservation gives every configuration the same threads (and numerics).
VLLM_ENV = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def vllm_python() -> Path:
    """Build (or find built) the vLLM virtualenv with `scripts/vllm-venv`; its python, or a clear error."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "vllm-venv")], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/vllm-venv failed (exit {proc.returncode}); the vLLM end-to-end test needs it:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def make_model(python: Path, out: Path, **sizes: int | float) -> Path:
    """Write a random-weight model + local tokenizer with `make_model.py` run by the vLLM venv's python."""
    args = [str(python), str(MAKE_MODEL), str(out)]
    for name, value in sizes.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=600)
    return out


@dataclass
class Proc:
    """A started server process and the file its stdout/stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log()[-chars:]

    def count(self, pattern: str) -> int:
        """How many lines of the log match the regular expression."""
        return len(re.findall(pattern, self.log(), flags=re.MULTILINE))

    def wait_for_log(self, pattern: str, timeout: float, *, at_least: int = 1) -> list[str]:
        """Wait until `pattern` matched `at_least` times; the matches, or an error with the log's tail."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log(), flags=re.MULTILINE)
            if len(found) >= at_least:
                return found
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {pattern!r} seen {len(found)}x, wanted {at_least} in {timeout:.0f}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process, then SIGKILL its session's group if it outlives `timeout`; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        # vLLM's engine and worker processes are in the session we started; reap any that outlived it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.popen.returncode


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=log_path.parent,
            start_new_session=True,
        )
    return Proc(name, popen, log_path)


@dataclass
class LMCacheServer:
    """`lmcache server` (started by the shared launcher) on fixed loopback ports, restartable on them."""

    log_dir: Path
    l1_size_gb: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    http_port: int = 0
    prometheus_port: int = 0
    proc: Proc | None = None
    starts: int = 0
    _server: ServerProcess | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (self.port and self.http_port and self.prometheus_port):
            self.port, self.http_port, self.prometheus_port = free_ports(3)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> Proc:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._server = ServerProcess(
            *self.extra_args,
            l1_gb=self.l1_size_gb,
            command=(str(LMCACHE_BIN), "server"),
            log_level=None,
            log_path=self.log_dir / f"lmcache-server-{self.starts}.log",
            new_session=True,
            cwd=self.log_dir,
            ports=(self.port, self.http_port, self.prometheus_port),
        ).start(timeout_s=timeout)
        assert self._server.proc is not None
        self.proc = Proc("lmcache server", self._server.proc, self._server.log_path)
        return self.proc

    def stop(self) -> int | None:
        if self._server is None:
            return None
        code = self._server.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._server.pid, signal.SIGKILL)  # anything it left in its session
        self._server = self.proc = None
        return code

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus samples (`name{label="v",...}` -> value) from its HTTP frontend."""
        return scrape(f"{self.http_url}/metrics")

    def clear_l1(self) -> dict[str, Any]:
        resp = httpx.post(f"{self.http_url}/cache/clear", json={"tier": "l1", "force": True}, timeout=30)
        resp.raise_for_status()
        return dict(resp.json())


def scrape(url: str) -> dict[str, float]:
    """Prometheus text at `url` as `name{labels}` -> value (labels sorted, `name` alone when none)."""
    text = httpx.get(url, timeout=30).raise_for_status().text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def metric_sum(samples: dict[str, float], name: str) -> float:
    """Sum of every sample of `name` whatever its labels (vLLM labels by engine and model)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def kv_transfer_config(server: LMCacheServer, **extra: Any) -> dict[str, Any]:
    """The quick start's `--kv-transfer-config` pointed at `server`; `extra` adds `lmcache.mp.*` keys."""
    return {
        "kv_connector": "LMCacheMPConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {
            "lmcache.mp.host": "tcp://127.0.0.1",
            "lmcache.mp.port": server.port,
            **{f"lmcache.mp.{k}": v for k, v in extra.items()},
        },
    }


@dataclass
class VllmServer:
    """vLLM's OpenAI-API server (CPU build) started from the vLLM venv, and a client for it."""

    proc: Proc
    port: int
    model: str
    #: `psm_*` SHM segments vLLM's processes (our session) mapped; removed after they stop (shm_segments.py).
    segments: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def collect_segments(self) -> None:
        """Remember the SHM segments the processes of vLLM's session map now."""
        self.segments |= session_segments(self.proc.pid)

    @classmethod
    def start(
        cls,
        python: Path,
        model: Path,
        log_path: Path,
        *,
        kv_transfer: dict[str, Any] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        max_model_len: int = 4096,
        timeout: float = 300.0,
    ) -> VllmServer:
        port = free_port()
        argv = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "bfloat16",
            "--block-size",
            "32",
            "--max-model-len",
            str(max_model_len),
            "--enforce-eager",  # no torch.compile: a start costs seconds, not minutes, on 2 cores
            "--disable-hybrid-kv-cache-manager",
            "--no-enable-prefix-caching",  # so every hit vLLM reports comes from the connector
            "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens per request
            "--seed",
            "0",
            *(extra_args or []),
        ]
        if kv_transfer is not None:
            argv += ["--kv-transfer-config", json.dumps(kv_transfer)]
        proc = spawn("vllm", argv, log_path, env={**VLLM_ENV, **(env or {})})
        server = cls(proc, port, str(model))
        try:
            server._wait_healthy(timeout)
        except BaseException:
            server.stop()
            raise
        server.collect_segments()  # vLLM creates its message queues while it starts
        return server

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.popen.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited ({self.proc.popen.returncode}) while starting:\n{self.proc.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM not healthy after {timeout:.0f}s:\n{self.proc.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> int | None:
        """Stop vLLM; then remove the SHM segments its processes left behind.

        vLLM 0.32 SIGKILLs its engine and worker processes right after a SIGTERM, so neither the
        connector's unlink at exit nor Python's resource tracker always runs: the KV segments its worker
        logged (`lmcache_kv_*`) and vLLM's own `psm_*` message-queue segments that processes of its session
        mapped are ours, so we remove them; nobody else's are touched.
        """
        if self.proc.popen.poll() is None:
            self.collect_segments()
        code = self.proc.stop(timeout=60)
        for name in set(re.findall(r"to SHM /(lmcache_kv_\d+_\d+)", self.proc.log())):
            (Path("/dev/shm") / name).unlink(missing_ok=True)
        remove_segments(self.segments)
        return code

    def _body(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        }

    def complete(self, prompt: list[int], max_tokens: int = 16, timeout: float = 120) -> Completion:
        """Greedy completion of token ids; the generated ids and the prompt tokens vLLM did not compute."""
        resp = httpx.post(f"{self.url}/v1/completions", json=self._body(prompt, max_tokens), timeout=timeout)
        if resp.status_code != 200:
            raise AssertionError(f"vLLM answered {resp.status_code}: {resp.text[:2000]}")
        body = resp.json()
        details = body["usage"].get("prompt_tokens_details") or {}
        return Completion(list(body["choices"][0]["token_ids"]), int(details.get("cached_tokens") or 0))

    def stream(self, prompt: list[int], max_tokens: int = 4, timeout: float = 600) -> Streamed:
        """A streaming greedy request: seconds to the first generated token, the ids, the cached tokens."""
        body = {**self._body(prompt, max_tokens), "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        first: float | None = None
        ids: list[int] = []
        cached = 0
        with httpx.stream("POST", f"{self.url}/v1/completions", json=body, timeout=timeout) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                for choice in event.get("choices") or []:
                    if choice.get("token_ids"):
                        first = first if first is not None else time.perf_counter() - started
                        ids += choice["token_ids"]
                usage = event.get("usage") or {}
                cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or cached)
        if first is None:
            raise AssertionError("vLLM streamed no token")
        return Streamed(first, ids, cached)

    def metrics(self) -> dict[str, float]:
        return scrape(f"{self.url}/metrics")


@dataclass(frozen=True)
class Completion:
    """What one greedy request returned."""

    token_ids: list[int]
    cached_tokens: int


@dataclass(frozen=True)
class Streamed:
    """What one streaming request returned, and when its first token came."""

    ttft_s: float
    token_ids: list[int]
    cached_tokens: int
