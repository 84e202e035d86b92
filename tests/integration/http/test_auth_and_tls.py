"""`--http-auth-token`, HTTPS and the warning for an open frontend on the network.

Every route but /healthcheck and /metrics needs the token, through our CLI too; HTTPS comes with
`--http-ssl-certfile/--http-ssl-keyfile`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.integration.server.conftest import free_port, run_server

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "s3cret-token-0123456789"
OPEN = {"/healthcheck", "/metrics"}


def _cli(
    url: str, *args: str, token: str | None = None, cafile: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LMCACHE_HTTP_AUTH_TOKEN"}
    if token:
        env["LMCACHE_HTTP_AUTH_TOKEN"] = token
    if cafile:
        env["SSL_CERT_FILE"] = cafile
    cmd = [sys.executable, "-m", "lmcache.app.cli", *args, "--url", url, "--format", "json"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def _routes(schema: dict[str, object]) -> list[tuple[str, str]]:
    paths = schema["paths"]
    assert isinstance(paths, dict)
    out = []
    for path, item in paths.items():
        for method in item:
            out.append((method.upper(), path.replace("{cache_salt}", "t").replace("{request_id}", "r")))
    return sorted(out)


def test_every_route_but_health_and_metrics_needs_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMCACHE_HTTP_AUTH_TOKEN", TOKEN)  # the env var feeds --http-auth-token
    with run_server() as server, httpx.Client(base_url=server.http_url, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        schema = http.get("/schema/openapi.json", headers=bearer).json()
        routes = _routes(schema)
        assert len(routes) >= 20
        for method, path in routes:
            bare = http.request(method, path)
            wrong = http.request(method, path, headers={"Authorization": "Bearer wrong-token-0123456789"})
            good = http.request(method, path, headers=bearer)
            if path in OPEN:
                assert bare.status_code == good.status_code != 401, path
                continue
            assert bare.status_code == wrong.status_code == 401, (method, path, bare.text)
            assert bare.headers["www-authenticate"] == "Bearer"
            assert good.status_code != 401, (method, path)
        # Clients that can only set a URL (LMCache 0.5.6's CLI) put the token in the path.
        assert http.post(f"/token/{TOKEN}/cache/clear", json={"tier": "l1"}).status_code == 200
        assert http.post("/token/not-the-token-at-all/cache/clear", json={"tier": "l1"}).status_code == 401
        assert http.get("/schema/openapi.json").status_code == 401
        # Our CLI sends the token from the environment.
        denied = _cli(server.http_url, "kvcache", "clear")
        assert denied.returncode == 1 and "LMCACHE_HTTP_AUTH_TOKEN" in denied.stderr, denied.stderr
        assert _cli(server.http_url, "kvcache", "clear", token=TOKEN).returncode == 0
        assert _cli(server.http_url, "quota", "set", "t", "--limit-gb", "1", token=TOKEN).returncode == 0
        assert _cli(server.http_url, "ping", "kvcache").returncode == 0  # /healthcheck stays open
        assert http.get("/config", headers=bearer).json()["http"]["http_auth_token"] == "***"
        assert "without authentication" not in server.log()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_https_with_a_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    flags = ("--http-port", str(port), "--http-ssl-certfile", cert, "--http-ssl-keyfile", key)
    with run_server(*flags, "--http-auth-token", TOKEN) as server:
        url = f"https://127.0.0.1:{port}"
        assert f"HTTP frontend on {url}" in server.log()
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=10) as http:
            assert http.get("/status").status_code == 401
            assert http.get("/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()["is_healthy"]
        described = _cli(url, "describe", "kvcache", token=TOKEN, cafile=cert)
        assert described.returncode == 0, described.stderr
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=5)  # no plain HTTP on a TLS port


def test_tls_flags_go_together_and_name_missing_files(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "lmcache.app.cli",
        "server",
        "--l1-size-gb",
        "0.01",
        "--eviction-policy",
        "LRU",
    ]
    alone = subprocess.run([*cmd, "--http-ssl-certfile", cert], capture_output=True, text=True, check=False)
    assert alone.returncode == 2 and "--http-ssl-keyfile" in alone.stderr
    missing = subprocess.run(
        [*cmd, "--http-ssl-certfile", cert, "--http-ssl-keyfile", str(tmp_path / "nope.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        missing.returncode == 2
        and "--http-ssl-keyfile" in missing.stderr
        and "no such file" in missing.stderr
    )
    short = subprocess.run([*cmd, "--http-auth-token", "short"], capture_output=True, text=True, check=False)
    assert short.returncode == 2 and "--http-auth-token" in short.stderr


def test_an_open_frontend_on_the_network_is_warned_about() -> None:
    with run_server("--http-host", "0.0.0.0") as server:
        server.wait_for_log("accepts requests from the network without authentication")
