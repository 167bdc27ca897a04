"""The bearer token, checked before anything else reads the request.

A middleware rather than a route dependency: FastAPI reads and parses the body before it runs a route's
dependencies, so a dependency would answer a malformed body from a stranger with a 422 that describes it.
Here a request without the token gets its 401 before its body is read.
"""

from __future__ import annotations

import secrets

from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import ApiSettings

# Open without the token: the health check (container healthchecks, load balancers) and the API's own
# documentation (a browser cannot send a bearer token when it opens /docs; the schema holds no secret,
# and the docs' Authorize button then sends the token with every call made from the page).
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/docs-assets/",)

UNAUTHORIZED = "missing or wrong bearer token: send `Authorization: Bearer $API_TOKEN`"

# Declared on the protected routes so the OpenAPI schema (and Swagger's Authorize button) shows the scheme;
# the check itself is the middleware below.
bearer_scheme = HTTPBearer(auto_error=False, description="API_TOKEN, as `Authorization: Bearer <token>`.")


def token_matches(settings: ApiSettings, authorization: str | None) -> bool:
    """True when the Authorization header carries the configured token (constant-time comparison)."""
    if settings.auth_disabled:
        return True
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not settings.api_token:
        return False
    return secrets.compare_digest(token.encode(), settings.api_token.encode())


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class BearerTokenMiddleware:
    """401 for every HTTP request outside the open paths that lacks the token."""

    def __init__(self, app: ASGIApp, settings: ApiSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_open(scope["path"]):
            authorization = Headers(scope=scope).get("authorization")
            if not token_matches(self.settings, authorization):
                response = JSONResponse(
                    {"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
