"""What /openapi.json says about auth, and /docs and /redoc served without a CDN.

The document declares the bearer scheme of NTK_API_KEYS (and of NTK_METRICS_KEY for /metrics);
the operations that need a key say so, which they do only when keys are set. Swagger UI and ReDoc
load their JavaScript and CSS from this service, out of the ``fastapi-offline`` package, so the
pages work where no CDN can be reached (an air-gapped deployment).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ntk.api.tenants import keys_required
from ntk.core.settings import Settings

ASSETS = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
BEARER = {"type": "http", "scheme": "bearer",
          "description": "Authorization: Bearer <key>, a key of NTK_API_KEYS for /v1 (of NTK_METRICS_KEY for "
                         "/metrics); needed only where the operation lists this scheme under `security`"}


def declare_security(app: FastAPI, settings: Settings) -> None:
    """Add the bearer scheme to the document, and ``security`` to the operations that need a key."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {})["securitySchemes"] = {"bearer": BEARER}
            for path, operations in document["paths"].items():
                if needs_key(path, settings):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi


def needs_key(path: str, settings: Settings) -> bool:
    if path.startswith("/v1/"):
        return keys_required(settings)
    return path == "/metrics" and bool(settings.metrics_key)


def serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc, for an app made with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)
