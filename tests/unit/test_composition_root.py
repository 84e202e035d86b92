"""The containers are the only code that builds the server's and the coordinator's object graphs.

The lifecycle modules (the runtime, the entry points and the start/stop steps) may import from the
adapters and the domain only what they catch or publish (exceptions, event types) at run time; every
other name there is a type hint. A module that starts constructing a concrete class again fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LIFECYCLE = (
    "app/runtime.py",
    "app/runtime_extras.py",
    "app/server_graph.py",
    "app/http_frontend.py",
    "app/telemetry.py",
    "app/fleet_membership.py",
    "app/blend_wiring.py",
    "app/cli.py",
    "app/coordinator_main.py",
    "app/coordinator_server.py",
)


def _runtime_imports(tree: ast.Module) -> list[tuple[str, str]]:
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and id(node) not in guarded
        for alias in node.names
    ]


def _allowed(module: str, name: str) -> bool:
    if module.startswith(("lmcache.adapters", "lmcache.domain")):
        return name.endswith("Error") or module == "lmcache.domain.events"
    return module != "dependency_injector"


@pytest.mark.parametrize("path", LIFECYCLE)
def test_lifecycle_modules_build_nothing(path: str) -> None:
    tree = ast.parse((SRC / path).read_text())
    assert [imp for imp in _runtime_imports(tree) if not _allowed(*imp)] == []


def test_the_check_sees_a_concrete_import() -> None:
    tree = ast.parse("from lmcache.adapters.transport.server import ZmqServer\nfrom x import y\n")
    assert [imp for imp in _runtime_imports(tree) if not _allowed(*imp)] == [
        ("lmcache.adapters.transport.server", "ZmqServer")
    ]
