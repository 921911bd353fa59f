"""Browsers get error pages in their language (no trace); the API keeps its JSON. The API
documentation loads nothing from elsewhere."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from bookgate.app import create_app

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_a_mistyped_address_is_a_page_for_a_browser_and_json_for_a_client(client):
    page = client.get("/no-such-page", headers={**BROWSER, "Accept-Language": "fr"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Page introuvable" in page.text and '<html lang="fr">' in page.text
    assert "Content-Security-Policy" in page.headers
    api = client.get("/api/v1/no-such-thing", headers=BROWSER)  # the API is JSON, whoever asks
    assert api.status_code == 404 and api.json()["code"] == "not_found"
    assert client.get("/no-such-page").json()["code"] == "not_found"  # a client that does not ask for HTML


def test_a_refusal_on_a_page_is_a_403_page(client):
    r = client.post("/lang", data={"lang": "de"}, headers={**BROWSER, "Origin": "https://evil.example.net"})
    assert r.status_code == 403 and "Not allowed" in r.text  # refused: the choice was not stored
    r = client.post("/lang", data={"lang": "de"}, headers={"Origin": "https://evil.example.net"})
    assert r.status_code == 403 and r.json()["code"] == "bad_origin"


def test_an_unexpected_error_is_a_500_page_without_a_trace(settings, engine):
    app = create_app(settings, engine=engine, migrate_on_start=False)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail of the failure")

    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/boom", headers=BROWSER)
        assert page.status_code == 500 and "Something went wrong" in page.text
        assert "secret detail" not in page.text and "Traceback" not in page.text
        api = c.get("/boom")
        assert api.status_code == 500 and api.json() == {
            "code": "internal_error",
            "message": "an unexpected error occurred",
        }


def test_api_docs_are_served_from_here(client):
    page = client.get("/docs", headers=BROWSER)
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in page.text and "https://" not in page.text
    assert "<script>" not in page.text  # no inline script: the start-up is a file
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert "SwaggerUIBundle" in client.get("/static/docs/swagger-ui-bundle.js").text
    assert client.get("/openapi.json").json()["info"]["title"] == "Bookgate"



def test_redoc_is_served_from_here(client):
    page = client.get("/redoc", headers=BROWSER)
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in page.text and "https://" not in page.text and "<script>" not in page.text
    assert "img-src 'self' data:;" in page.headers["Content-Security-Policy"]  # the bundle's one logo URL stays blocked
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert "Redoc" in client.get("/static/docs/redoc.standalone.js").text[:2000]
    assert 'href="/redoc"' in client.get("/login", headers=BROWSER).text  # linked from every page


@pytest.mark.parametrize("name", ["../pyproject.toml", "portal.css.bak", "x.exe"])
def test_static_files_are_only_the_portals(client, name):
    assert client.get(f"/static/{name}").status_code == 404
