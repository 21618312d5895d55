"""Serve the dashboard: ``GET /`` answers the page, ``/ui/*`` its modules and stylesheet. Neither carries
tenant data (the app fetches everything through ``/api`` with the user's token) and neither is in the
OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSET_PATH = "/ui"

# Everything the page loads comes from this origin: no script, style, font or image from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@get("/", include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def dashboard_index() -> Response[bytes]:
    """The single page; the app routes inside it with the URL's fragment (``/#/agents``)."""
    return Response(
        (STATIC_DIR / "index.html").read_bytes(),
        media_type=MediaType.HTML,
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


def asset_router() -> Router:
    # no-cache: browsers revalidate (cheap 304s) so a new release is picked up without a build hash.
    return create_static_files_router(
        path=ASSET_PATH,
        directories=[STATIC_DIR],
        name="dashboard-assets",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
    )


__all__ = ["ASSET_PATH", "STATIC_DIR", "asset_router", "dashboard_index"]
