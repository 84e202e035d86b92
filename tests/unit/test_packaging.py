"""pyproject.toml's explicit package list must match src/, and the built wheel must carry every package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["tool"]["setuptools"]["packages"])


def _on_disk() -> set[str]:
    src = ROOT / "src"
    found = set()
    for init in src.rglob("__init__.py"):
        rel = init.parent.relative_to(src).parts
        found.add(".".join(("lmcache", *rel)))
    return found


def test_package_list_matches_src() -> None:
    declared, on_disk = _declared(), _on_disk()
    assert on_disk - declared == set(), "add these to [tool.setuptools] packages"
    assert declared - on_disk == set(), "these are declared but have no __init__.py under src/"


def test_console_script_and_python_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["lmcache"] == "lmcache.app.cli:main"
    assert project["requires-python"] == ">=3.11"
    assert any(dep.startswith("torch>=") for dep in project["dependencies"])


def test_license_is_an_spdx_expression() -> None:
    """`license = {text = ...}` makes setuptools >= 77 print a deprecation warning on every install."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0"
    backend = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert backend == ["setuptools>=77"]  # the first setuptools that reads a PEP 639 license string


@pytest.mark.slow
def test_built_wheel_contains_every_package(tmp_path: Path) -> None:
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
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lmcache-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in sorted(_declared()):
        init = "/".join(package.split(".")) + "/__init__.py"
        assert init in names, f"{package} is missing from the wheel"
    assert "lmcache/app/cli.py" in names
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
