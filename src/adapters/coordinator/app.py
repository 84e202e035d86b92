"""The coordinator's Litestar app: every route of coordinator-api.md over one `CoordinatorService`.

The runtime is handed to handlers as the `runtime` dependency; the app's start-up and shutdown hooks start
and stop its loops. No OpenAPI schema and no Litestar logging config: the CLI owns logging.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide

from lmcache.adapters.coordinator import schemas
from lmcache.adapters.coordinator.routes_aliases import ALIAS_ROUTES
from lmcache.adapters.coordinator.routes_blend import BLEND_ROUTES
from lmcache.adapters.coordinator.routes_l2 import L2_ROUTES
from lmcache.adapters.coordinator.routes_membership import MEMBERSHIP_ROUTES
from lmcache.adapters.coordinator.service import CoordinatorService
from lmcache.adapters.http.signatures import signature_namespace

__all__ = ("build_coordinator_app",)

MAX_BODY_BYTES = 64 * 1024 * 1024  # an event batch or a blend publication can be large


def build_coordinator_app(runtime: CoordinatorService) -> Litestar:
    """Build the ASGI app serving `runtime`."""

    def provide_runtime() -> CoordinatorService:
        return runtime

    namespace = signature_namespace(schemas, CoordinatorService)
    return Litestar(
        route_handlers=[*MEMBERSHIP_ROUTES, *L2_ROUTES, *BLEND_ROUTES, *ALIAS_ROUTES],
        dependencies={"runtime": Provide(provide_runtime, sync_to_thread=False, use_cache=True)},
        signature_namespace=namespace,
        on_startup=[runtime.start],
        on_shutdown=[runtime.stop],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
    )
