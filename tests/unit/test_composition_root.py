"""The containers are the only code that builds the object graphs (server, coordinator, trace replay).

The lifecycle modules (the runtime, the entry points and the start/stop steps) may import from the
adapters and the domain only what they catch or publish (exceptions, event types) at run time; every
other name there is a type hint. A module that starts constructing a concrete class again fails here.
Nor does the domain construct any class the containers build (engines, stores, policies, loops): it is
handed them.
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
    if (module, name) == ("lmcache.adapters", "lazy_torch"):  # when torch loads: functions, builds nothing
        return True
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


def _built_by_containers() -> set[str]:
    """The domain classes a container (`app/*container*.py`) imports to build at run time."""
    names: set[str] = set()
    for path in sorted((SRC / "app").glob("*container*.py")):
        for module, name in _runtime_imports(ast.parse(path.read_text())):
            if module.startswith("lmcache.domain") and name[:1].isupper():
                names.add(name)
    return names


def _constructed(tree: ast.Module, classes: set[str]) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.func.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes
    ]


def test_the_domain_constructs_nothing_the_containers_build() -> None:
    """Engines, stores, policies and loops are built by the containers and handed in, never built inside."""
    classes = _built_by_containers()
    assert {"CacheEngine", "L1Manager", "EvictionLoop", "ArenaAllocator", "LruPolicy"} <= classes
    found = {
        str(path.relative_to(SRC)): hits
        for path in sorted((SRC / "domain").rglob("*.py"))
        if (hits := _constructed(ast.parse(path.read_text()), classes))
    }
    assert found == {}


def test_the_check_sees_a_domain_construction() -> None:
    tree = ast.parse("def f(s):\n    return L1Manager(ArenaAllocator(s, 64), policy)\n")
    assert _constructed(tree, {"L1Manager", "ArenaAllocator"}) == [(2, "L1Manager"), (2, "ArenaAllocator")]
