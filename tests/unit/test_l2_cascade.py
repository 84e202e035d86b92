"""The L2 cascade (l2_container.py): unavailable types, missing extras, order, cleanup on failure."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest

from lmcache.app.config import ConfigError
from lmcache.app.config.l2_base import DEADLINE_FIELDS, WRAPPER_FIELDS, L2SpecBase
from lmcache.app.l2_container import l2_adapters
from lmcache.app.l2_specs import load_adapter_class

CLOSED: list[str] = []


class RecordingAdapter:
    """Stands in for a backend class; records construction and close."""

    def __init__(self, name: str, **_: Any) -> None:
        self.name = name

    async def close(self) -> None:
        CLOSED.append(self.name)


class FailingAdapter:
    def __init__(self, **_: Any) -> None:
        raise RuntimeError("backend refused to start")


class GoodSpec(L2SpecBase):
    impl: ClassVar[str | None] = f"{__name__}:RecordingAdapter"
    type: Literal["good"] = "good"
    name: str


class BadSpec(L2SpecBase):
    impl: ClassVar[str | None] = f"{__name__}:FailingAdapter"
    type: Literal["bad"] = "bad"


class ExtraSpec(L2SpecBase):
    impl: ClassVar[str | None] = "surely_not_installed_client.adapter:Adapter"
    pip_extra: ClassVar[str | None] = "fancy"
    type: Literal["extra"] = "extra"


class UnbuiltSpec(L2SpecBase):
    type: Literal["later"] = "later"


def test_builds_in_cascade_order() -> None:
    built = l2_adapters([GoodSpec(name="a"), GoodSpec(name="b")])
    assert [adapter.name for adapter in built] == ["a", "b"]


def test_unbuilt_type_names_its_position() -> None:
    with pytest.raises(ConfigError, match=r"^--l2-adapter #2: type 'later' is not available in this build$"):
        l2_adapters([GoodSpec(name="a"), UnbuiltSpec()])


def test_missing_optional_package_names_the_extra() -> None:
    with pytest.raises(ConfigError) as caught:
        l2_adapters([ExtraSpec()])
    assert caught.value.messages == (
        "--l2-adapter #1 (type 'extra') needs the optional package "
        "'surely_not_installed_client'; install lmcache[fancy]",
    )


def test_failure_closes_what_was_built() -> None:
    CLOSED.clear()
    with pytest.raises(RuntimeError, match="refused"):
        l2_adapters([GoodSpec(name="first"), GoodSpec(name="second"), BadSpec()])
    assert CLOSED == ["second", "first"]


# --- the real specs and adapters -------------------------------------------------------------------

AVAILABLE = {
    "fs",
    "mock",
    "s3",
    "resp",
    "valkey",
    "plugin",
    "fault_inject",
    "mooncake_store",
    "raw_block",
    "dax",
    "fs_native",
    "nixl_store",
    "nixl_store_dynamic",
    "native_plugin",
    "aerospike",
    "hfbucket",
}


def _spec_classes() -> list[type[L2SpecBase]]:
    from typing import get_args

    from lmcache.app.config.l2 import L2AdapterSpec

    union = get_args(L2AdapterSpec)[0]
    return list(get_args(union))


def _parse(*specs: dict[str, Any]) -> list[L2SpecBase]:
    from lmcache.app.config.l2 import L2Config

    return list(L2Config.model_validate({"l2_adapter": list(specs)}).l2_adapter)


def test_available_types_are_exactly_the_implemented_ones() -> None:
    available = {cls.model_fields["type"].annotation.__args__[0] for cls in _spec_classes() if cls.impl}
    assert available == AVAILABLE


def test_every_spec_field_is_a_constructor_keyword() -> None:
    import inspect

    for number, cls in enumerate(_spec_classes(), start=1):
        if cls.impl is None:
            continue
        adapter_cls = load_adapter_class(number, cls.model_construct())
        params = inspect.signature(adapter_cls).parameters
        fields = set(cls.model_fields) - {"type", *WRAPPER_FIELDS}
        assert fields <= set(params), (cls.__name__, fields - set(params))
        extra = [p for name, p in params.items() if name not in fields]
        assert all(p.default is not inspect.Parameter.empty for p in extra), cls.__name__


def test_fs_and_fault_inject_build_wrapped(tmp_path: Any) -> None:
    import asyncio

    from lmcache.adapters.storage.fault_inject import FaultInjectL2Adapter
    from lmcache.adapters.storage.fs import FsL2Adapter
    from lmcache.adapters.storage.mock import MockL2Adapter
    from lmcache.adapters.storage.resilience import ResilientL2Adapter

    mock = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}
    built = l2_adapters(
        _parse(
            {"type": "fs", "base_path": str(tmp_path)},
            {"type": "fault_inject", "adapter": mock, "seed": 3},
        )
    )
    assert all(isinstance(a, ResilientL2Adapter) for a in built)
    assert isinstance(built[0].inner, FsL2Adapter)
    assert isinstance(built[1].inner, FaultInjectL2Adapter) and built[1].inner.seed == 3
    assert isinstance(built[1].inner.inner, MockL2Adapter)
    assert built[1].breaker.name == "#2 (fault_inject)"

    async def close_all() -> None:
        for adapter in built:
            await adapter.close()

    asyncio.run(close_all())


@pytest.mark.parametrize(
    ("module", "cls", "message"),
    [
        ("surely_not_a_module_xyz", "A", "cannot import module 'surely_not_a_module_xyz'"),
        ("tests.fakes.l2_adapter", "Missing", "has no class 'Missing'"),
        ("tests.unit.test_l2_cascade", "RecordingAdapter", "missing or not async: store, lookup_and_lock"),
    ],
)
def test_plugin_errors_name_the_adapter(module: str, cls: str, message: str) -> None:
    spec = {"type": "plugin", "module_path": module, "class_name": cls}
    with pytest.raises(ConfigError, match=r"^--l2-adapter #2 \(type 'plugin'\): plugin .*" + message):
        l2_adapters(_parse({"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}, spec))


def test_plugin_bad_params_are_a_config_error() -> None:
    spec = {
        "type": "plugin",
        "module_path": "tests.fakes.l2_adapter",
        "class_name": "FakeL2Adapter",
        "adapter_params": {"nope": 1},
    }
    with pytest.raises(ConfigError, match="adapter_params do not fit"):
        l2_adapters(_parse(spec))


def test_missing_redis_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "redis.asyncio", raising=False)
    monkeypatch.delitem(sys.modules, "lmcache.adapters.storage.resp", raising=False)
    with pytest.raises(ConfigError, match=r"optional package 'redis[.a-z]*'; install lmcache\[redis"):
        l2_adapters(_parse({"type": "resp", "host": "127.0.0.1", "port": 6379}))


def test_deadlines_are_per_adapter_fields_with_the_old_defaults() -> None:
    import asyncio

    mock = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}
    built = l2_adapters(_parse(mock, {**mock, "lookup_deadline_s": 0.25, "store_deadline_s": 2}))
    assert (built[0].deadline_s, built[0].store_deadline_s) == (5.0, 30.0)
    assert (built[1].deadline_s, built[1].store_deadline_s) == (0.25, 2.0)
    for adapter in built:
        asyncio.run(adapter.close())


@pytest.mark.parametrize("bad", [0, -1, 1e9, float("inf"), float("nan"), "soon"])
def test_deadlines_are_validated(bad: object) -> None:
    from pydantic import ValidationError

    mock = {"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}
    for field in sorted(DEADLINE_FIELDS):
        with pytest.raises(ValidationError, match=field):
            _parse({**mock, field: bad})


def test_every_part_comes_from_the_containers_providers() -> None:
    """Overriding a provider changes what the cascade builds: the container is where the parts are built."""
    from dependency_injector import providers

    from lmcache.app.l2_container import L2Container

    class Marked:
        def __init__(self, inner: Any, **options: Any) -> None:
            self.inner, self.options = inner, options

    container = L2Container(specs=[GoodSpec(name="a"), GoodSpec(name="b")])
    container.resilience.override(providers.Factory(Marked))
    built = container.adapters()
    assert [type(a) for a in built] == [Marked, Marked]
    assert [a.inner.name for a in built] == ["a", "b"]
    assert built[1].options["name"] == "#2 (good)"
