"""CacheBlend directory routes (coordinator-api.md §3, cacheblend.md §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import delete, post

from lmcache.adapters.coordinator.schemas import bad_request, decode_tokens
from lmcache.domain.fleet_blend import BlendRange

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import JSONBody

    from lmcache.adapters.coordinator.schemas import (
        BlendFingerprintsBody,
        BlendLookupBody,
        BlendMatchBody,
        RemoveFingerprintsBody,
    )
    from lmcache.adapters.coordinator.service import CoordinatorService

__all__ = ("BLEND_ROUTES",)


@post("/blend/fingerprints", status_code=200)
async def insert_fingerprints(
    data: JSONBody[BlendFingerprintsBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, int]:
    """Index the full chunks of each published range; `inserted` counts new entries only."""
    ranges = [
        BlendRange(r.model_scope, tuple(r.tokens), tuple(r.object_keys), r.old_st_base) for r in data.ranges
    ]
    return {"inserted": runtime.state.blend.insert(ranges)}


@delete("/blend/fingerprints", status_code=200)
async def remove_fingerprints(
    data: JSONBody[RemoveFingerprintsBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, int]:
    """Remove every entry of the given chunk hashes."""
    return {"removed": runtime.state.blend.delete(data.object_keys)}


@post("/blend/match", status_code=200)
async def match(
    data: JSONBody[BlendMatchBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """Stored chunks of the scope found in the query, at most one per key, ascending cur_st."""
    if data.tokens_b64 is not None:
        tokens = decode_tokens(data.tokens_b64, 4, "tokens_b64")
    elif data.tokens_u64_b64 is not None:
        tokens = decode_tokens(data.tokens_u64_b64, 8, "tokens_u64_b64")
    else:
        raise bad_request("tokens_b64", "one of tokens_b64 or tokens_u64_b64 is required")
    found = runtime.state.blend.match(data.model_scope, tokens)
    return {"matches": [{"object_key": m.object_key, "old_st": m.old_st, "cur_st": m.cur_st} for m in found]}


@post("/directory/blend-lookup", status_code=200)
async def blend_lookup(
    data: JSONBody[BlendLookupBody], runtime: NamedDependency[CoordinatorService]
) -> dict[str, Any]:
    """The LMCache 0.5.6 name of the match, scoped by `<model_name>@<cache_salt>`."""
    tokens = decode_tokens(data.tokens_b64, 4, "tokens_b64")
    found = runtime.state.blend.match(f"{data.model_name}@{data.cache_salt}", tokens)
    return {"matches": [{"chunk_hash": m.object_key, "old_st": m.old_st, "cur_st": m.cur_st} for m in found]}


BLEND_ROUTES = (insert_fingerprints, remove_fingerprints, match, blend_lookup)
