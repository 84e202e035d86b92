"""The HTTP frontend's Litestar app: every route of issue 6 over one `HttpServices`.

Handlers receive the services (and the prefetch book and script runner) as named dependencies. The app
publishes its OpenAPI schema at `/schema/openapi.json` (no HTML renderers): it documents every route with
its bounds, and the HTTP fuzzer (benchmarks/fuzz_http.py) is driven by it. No Litestar logging config:
the CLI owns logging.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from lmcache.adapters.http import schemas
from lmcache.adapters.http.errors import EXCEPTION_HANDLERS
from lmcache.adapters.http.l2_prefetch import PrefetchBook
from lmcache.adapters.http.routes_cache import CACHE_ROUTES
from lmcache.adapters.http.routes_info import INFO_ROUTES
from lmcache.adapters.http.routes_l2 import L2_ROUTES
from lmcache.adapters.http.routes_quota import QUOTA_ROUTES
from lmcache.adapters.http.run_script import RUN_SCRIPT_ROUTES
from lmcache.adapters.http.sandbox import ScriptRunner
from lmcache.adapters.http.services import HttpServices
from lmcache.adapters.http.signatures import signature_namespace

__all__ = ("MAX_BODY_BYTES", "build_http_app")

MAX_BODY_BYTES = 16 * 1024 * 1024  # 10,000 keys or block ids fit many times over


def build_http_app(services: HttpServices) -> Litestar:
    """Build the ASGI app serving `services`."""
    book = PrefetchBook()
    runner = ScriptRunner(services.settings.script_allowed_imports)

    def provide_services() -> HttpServices:
        return services

    def provide_book() -> PrefetchBook:
        return book

    def provide_runner() -> ScriptRunner:
        return runner

    namespace = signature_namespace(schemas, HttpServices, PrefetchBook, ScriptRunner)
    return Litestar(
        route_handlers=[*INFO_ROUTES, *CACHE_ROUTES, *L2_ROUTES, *QUOTA_ROUTES, *RUN_SCRIPT_ROUTES],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False, use_cache=True),
            "prefetches": Provide(provide_book, sync_to_thread=False, use_cache=True),
            "runner": Provide(provide_runner, sync_to_thread=False, use_cache=True),
        },
        signature_namespace=namespace,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="lmcache server",
            version=services.version or "0",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
    )
