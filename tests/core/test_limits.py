"""Request bodies are bounded before anything reads them, and a site file is bounded in what it may
make the server do: parse time, values (aliases expanded) and rows created."""

from __future__ import annotations

import time

import pytest
import yaml

from config.site import MAX_ROWS, MAX_VALUES, SiteFileError, example_path, load_yaml, parse_site_document


def test_an_oversized_body_is_refused_before_authentication(client):
    """A body over the limit, declared to an endpoint that needs a login: 413 at once, unread."""
    r = client.post(
        "/api/v1/reservations",
        content=b"{" + b" " * (300 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    small = client.post("/api/v1/reservations", json={}, headers={"Content-Type": "application/json"})
    assert small.status_code == 401  # within the limit the request goes on to authentication


def test_a_streamed_body_is_cut_off_at_its_limit(client):
    def chunks():
        for _ in range(100):
            yield b" " * 8192  # 800 KiB without a Content-Length

    r = client.post(
        "/api/v1/auth/token", content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large"


def test_documents_have_their_own_larger_limit(client, admin_headers):
    r = client.post(
        "/api/v1/moderation/venues/sports/documents",
        files={"file": ("big.pdf", b"%PDF-1.4" + b"0" * (7 * 1024 * 1024), "application/pdf")},
        data={"title": "too big", "kind": "house_rules"},
        headers=admin_headers,
    )
    assert r.status_code == 413


def test_an_alias_bomb_is_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("sites: *a9")  # 10^10 values once expanded
    started = time.monotonic()
    with pytest.raises(SiteFileError) as info:
        parse_site_document(load_yaml("\n".join(lines)))
    assert time.monotonic() - started < 2.0
    assert f"more than {MAX_VALUES} values" in info.value.errors[0]


def test_a_file_may_create_a_bounded_number_of_rows():
    doc = yaml.safe_load(example_path().read_text())
    resource = doc["sites"][0]["venues"][0]["resources"][0]
    extra = [
        {**resource, "key": f"spare-{i}", "pool": {"units": 10_000}, "capacity": 1}
        for i in range(MAX_ROWS // 10_000 + 1)
    ]
    doc["sites"][0]["venues"][0]["resources"] += extra
    with pytest.raises(SiteFileError) as info:
        parse_site_document(doc)
    assert f"at most {MAX_ROWS}" in info.value.errors[-1]


def test_a_large_valid_file_is_parsed_in_well_under_a_second():
    """A 1 MB YAML document (libyaml's parser when installed, off the event loop in the server)."""
    text = "\n".join(f"k{i}: [value-{i}, {i}, true]" for i in range(40_000))
    assert len(text) > 900_000
    started = time.monotonic()
    data = load_yaml(text)
    assert len(data) == 40_000 and time.monotonic() - started < 5.0
