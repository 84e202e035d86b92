"""The KV dtype the fp8 serde reads from registrations (l2_container.kv_dtype_resolver)."""

from __future__ import annotations

from types import SimpleNamespace

from lmcache.app.l2_container import kv_dtype_resolver
from lmcache.domain.keys import ObjectKey
from lmcache.domain.workers import Worker, WorkerRegistry
from tests.fakes.clock import FakeClock


def _registered(model: str, *dtypes: str) -> Worker:
    groups = tuple(SimpleNamespace(geometry=SimpleNamespace(dtype=d)) for d in dtypes)
    return Worker(
        len(dtypes) * 7 + hash(model) % 1000,
        model,
        1,
        "lmcache_driven",
        SimpleNamespace(groups=groups),
        None,
        0.0,
        0.0,
    )


def test_the_dtype_comes_from_the_models_registrations() -> None:
    workers = WorkerRegistry(FakeClock())
    dtype_of = kv_dtype_resolver(workers)
    key = ObjectKey(b"\x01" * 32, "m", 1)
    assert dtype_of(key) is None  # nobody registered yet
    workers.add(_registered("m", "bfloat16", "bfloat16"))
    workers.add(_registered("other", "float16"))
    assert dtype_of(key) == "bfloat16"
    engine_driven = Worker(
        99, "m2", 1, "engine_driven", SimpleNamespace(dtype="torch.float16"), None, 0.0, 0.0
    )
    workers.add(engine_driven)
    assert dtype_of(key._replace(model_name="m2")) == "float16"


def test_mixed_dtypes_are_not_guessed() -> None:
    workers = WorkerRegistry(FakeClock())
    workers.add(_registered("m", "float16", "bfloat16"))
    assert kv_dtype_resolver(workers)(ObjectKey(b"\x01" * 32, "m", 1)) is None
