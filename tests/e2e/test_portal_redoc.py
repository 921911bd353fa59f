"""The API reference (ReDoc) renders in a real browser with every request outside this server refused."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from bench.harness import serve

pytestmark = pytest.mark.usefixtures("example_site")


# An element each page shows only once its bundle has run and read the OpenAPI document.
RENDERED = {"/redoc": "#redoc [data-section-id^='tag/']", "/docs": "#swagger-ui .opblock"}


@pytest.mark.parametrize("path", sorted(RENDERED))
def test_api_documentation_renders_without_any_external_request(browser, app, path):
    with serve(app) as base:
        here = urlsplit(base).netloc
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        elsewhere: list[str] = []
        csp_errors: list[str] = []

        def route(r):  # type: ignore[no-untyped-def]
            url = r.request.url
            if url.startswith(("blob:", "data:")) or urlsplit(url).netloc == here:
                r.continue_()
            else:
                elsewhere.append(url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(base + path)
        page.locator(RENDERED[path]).first.wait_for(timeout=30_000)
        assert page.locator(RENDERED[path]).count() > 5  # the API's operations or tags are listed
        assert elsewhere == []
        # The one address of elsewhere in ReDoc's bundle, its attribution logo, is stopped by the
        # page's policy before any request (the logo then hides itself); nothing else is.
        assert [e for e in csp_errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == []
        context.close()


def test_the_portal_links_both_documentation_pages(browser, app):
    with serve(app) as base:
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/login")
        page.click("a[href='/redoc']")
        page.wait_for_url(base + "/redoc")
        page.locator("#redoc h1").first.wait_for(timeout=30_000)
        assert "Bookgate" in page.locator("#redoc h1").first.inner_text()
        context.close()
