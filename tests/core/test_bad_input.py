"""Input the service cannot hold is a 4xx with a reason code, never a 500 (both databases)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("example_site")

HUGE = 2**63  # one past the largest 64-bit id


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/reservations/{HUGE}",
        f"/api/v1/series/{HUGE}",
        f"/api/v1/users/{HUGE}",
        f"/api/v1/moderation/documents/{HUGE}/content",
        f"/api/v1/reservations?offset={HUGE}",
        f"/api/v1/users?offset={HUGE}",
        f"/api/v1/access/events?offset={HUGE}",
    ],
)
def test_ids_and_offsets_past_64_bits_are_client_errors(client, admin_headers, path):
    r = client.get(path, headers=admin_headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "code" in r.json()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/resources/court-1/availability?from=9999-12-31T00:00:00%2B00:00&to=9999-12-31T23:00:00%2B00:00",
        "/api/v1/resources/court-1/availability?from=0001-01-01T00:00:00%2B00:00&to=0001-01-02T00:00:00%2B00:00",
        "/api/v1/venues/sports/availability?date=9999-12-31",
        "/api/v1/venues/sports/availability?date=0001-01-01",
    ],
)
def test_calendar_edges_are_client_errors(client, admin_headers, path):
    r = client.get(path, headers=admin_headers)
    assert r.status_code < 500, (r.status_code, r.text)


def test_document_names_outside_latin1_download(client, admin_headers):
    name = "Règlement œuvre.pdf"
    r = client.post(
        "/api/v1/moderation/venues/sports/documents",
        files={
            "file": (
                name,
                b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
                "application/pdf",
            )
        },
        data={"title": "Rules", "kind": "house_rules"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    got = client.get(f"/api/v1/moderation/documents/{r.json()['id']}/content", headers=admin_headers)
    assert got.status_code == 200
    assert "filename*=UTF-8''R%C3%A8glement%20%C5%93uvre.pdf" in got.headers["content-disposition"]


def test_content_disposition_keeps_headers_latin1_and_quotes_safe():
    from moderation.api import content_disposition

    header = content_disposition('a"b\\c é.pdf')
    header.encode("latin-1")  # a header value must be
    assert 'filename="a_b_c _.pdf"' in header


def test_models_built_from_client_values_answer_422_and_save_nothing(client, admin_headers):
    before = client.get("/api/v1/resources/court-1", headers=admin_headers).json()
    r = client.patch("/api/v1/resources/court-1/rules", json={"min_minutes": 300}, headers=admin_headers)
    assert r.status_code == 422 and "min_minutes" in r.text
    assert client.get("/api/v1/resources/court-1", headers=admin_headers).json() == before


def test_a_duplicate_to_a_bad_resource_key_is_422(client, admin_headers):
    from datetime import UTC, datetime, timedelta

    always = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    client.patch("/api/v1/resources/court-1/rules", json={"opening_hours": always}, headers=admin_headers)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
    made = client.post(
        "/api/v1/reservations",
        json={"resource": "court-1", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        headers=admin_headers,
    )
    assert made.status_code == 201, made.text
    for key in ("", "x" * 64):
        r = client.post(
            f"/api/v1/reservations/{made.json()['id']}/duplicate", json={"resources": [key]}, headers=admin_headers
        )
        assert r.status_code == 422, r.text


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/moderation/decisions"), ("DELETE", "/api/v1/users/me")])
def test_a_known_path_with_the_wrong_method_is_405(client, admin_headers, method, path):
    assert client.request(method, path, json={}, headers=admin_headers).status_code == 405


def test_numbers_are_not_read_as_dates_or_times(client, admin_headers):
    r = client.get("/api/v1/resources/court-1/availability?from=0.5&to=1.5", headers=admin_headers)
    assert r.status_code == 422 and "ISO 8601" in r.text
    r = client.post(
        "/api/v1/reservations", json={"resource": "court-1", "start": 0, "end": 3600}, headers=admin_headers
    )
    assert r.status_code == 422 and "ISO 8601" in r.text


@pytest.mark.parametrize("year", ["0001", "9999"])
def test_bookings_and_series_at_the_calendar_edges_are_client_errors(client, admin_headers, year):
    body = {"resource": "court-1", "start": f"{year}-01-01T10:00:00+00:00", "end": f"{year}-01-01T11:00:00+00:00"}
    # an admin is not held to the booking notice: the far future may be booked, but nothing breaks
    assert client.post("/api/v1/reservations", json=body, headers=admin_headers).status_code < 500
    series = {**body, "rrule": "FREQ=WEEKLY;COUNT=2"}
    assert client.post("/api/v1/series", json=series, headers=admin_headers).status_code < 500
