"""The interactive docs render without internet: every script, stylesheet and icon /docs and /redoc
reference is served by the API itself; the docs are open without the token, the API is not."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import ApiSettings

TOKEN = "docs-token"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(ApiSettings(TOKEN, False)))


class _References(HTMLParser):
    """The URLs a page makes the browser fetch: script sources, stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.urls.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}),
        ("/redoc", {"redoc.standalone.js": "javascript", "favicon.png": "image/png"}),
    ],
)
def test_every_asset_of_the_docs_is_served_by_the_api(client: TestClient, page: str, expected: dict) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    urls = _references(response.text)

    assert {url.rsplit("/", 1)[-1] for url in urls} == set(expected)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert expected[url.rsplit("/", 1)[-1]] in asset.headers["content-type"], url
        assert len(asset.content) > 1000, url
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text


def test_the_docs_and_schema_are_open_and_the_api_is_not(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/docs-assets/swagger-ui.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/jobs").status_code == 401
    assert client.get("/docs-assets/../jobs").status_code in (401, 404)


def test_the_schema_declares_the_bearer_token_on_every_protected_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            secured = {"HTTPBearer": []} in operation.get("security", [])
            assert secured is (path != "/healthz"), (method, path)
