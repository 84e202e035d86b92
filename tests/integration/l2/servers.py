"""Real loopback servers for the L2 tests: redis-server (plain and TLS) and moto's S3 server.

Each is started on a free 127.0.0.1 port, waited for by polling with a deadline, and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3
import redis

if TYPE_CHECKING:
    from pathlib import Path

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


@dataclass
class RedisServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    tls: bool = False
    password: str = ""
    proc: subprocess.Popen[bytes] | None = None

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
            REDIS_SERVER,
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
