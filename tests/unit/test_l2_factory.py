"""The L2 cascade factory: unavailable types, missing optional packages, order, cleanup on failure."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest

from lmcache.app.config import ConfigError
from lmcache.app.config.l2_base import L2SpecBase
from lmcache.app.l2_factory import build_l2_adapters

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
    built = build_l2_adapters([GoodSpec(name="a"), GoodSpec(name="b")])
    assert [adapter.name for adapter in built] == ["a", "b"]


def test_unbuilt_type_names_its_position() -> None:
    with pytest.raises(ConfigError, match=r"^--l2-adapter #2: type 'later' is not available in this build$"):
        build_l2_adapters([GoodSpec(name="a"), UnbuiltSpec()])


def test_missing_optional_package_names_the_extra() -> None:
    with pytest.raises(ConfigError) as caught:
        build_l2_adapters([ExtraSpec()])
    assert caught.value.messages == (
        "--l2-adapter #1 (type 'extra') needs the optional package "
        "'surely_not_installed_client'; install lmcache[fancy]",
    )


def test_failure_closes_what_was_built() -> None:
    CLOSED.clear()
    with pytest.raises(RuntimeError, match="refused"):
        build_l2_adapters([GoodSpec(name="first"), GoodSpec(name="second"), BadSpec()])
    assert CLOSED == ["second", "first"]
