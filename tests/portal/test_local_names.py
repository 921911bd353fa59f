"""Names given per language in the site file are shown in the page's language, everywhere a
site, venue or resource is named, and the default name where the file gives none for it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from bookgate.provision import apply_site_file, parse_site
from config.site import example_path
from core.audit import SYSTEM


@pytest.fixture
def named_site(engine) -> None:
    """The example residence, its site named in three languages too (its venues and some
    resources already are)."""
    data = yaml.safe_load(example_path().read_text())
    data["sites"][0]["name"] = {"fr": "Résidence Les Tilleuls", "en": "Linden Residence", "de": "Wohnanlage Linden"}
    apply_site_file(engine, parse_site(data), SYSTEM)


def _html(lang: str) -> dict[str, str]:
    return {"Accept": "text/html", "Accept-Language": lang}


def _sign_in(client, make_user, *roles: dict) -> None:
    user, password = make_user(*roles)
    assert client.post("/login", data={"email": user.email, "password": password}).status_code == 200


@pytest.mark.usefixtures("named_site")
def test_resident_pages_name_places_in_the_page_language(client, make_user):
    _sign_in(client, make_user, {"role": "resident", "site": "les-tilleuls"})
    home = {lang: client.get("/", headers=_html(lang)).text for lang in ("fr", "de", "en")}
    assert "Espace sportif" in home["fr"] and "Court de tennis n° 2" in home["fr"]
    assert "Résidence Les Tilleuls" in home["fr"]
    assert "Sportbereich" in home["de"] and "Tennisplatz 2" in home["de"] and "Wohnanlage Linden" in home["de"]
    assert "Sports area" in home["en"] and "Tennis court 2" in home["en"] and "Espace sportif" not in home["en"]
    assert "Tennis court 1" in home["fr"]  # no French name given: the default one
    # Kinds are words of the page's language too.
    assert "Tennisplatz 2</a> <span class=\"muted\">(Platz" in home["de"]
    assert "Gemeinschaftsauto (Schlüssel im Schrank)</a> <span class=\"muted\">(Ausstattung" in home["de"]
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    book = client.get("/book", params={"venue": "sports", "day": day}, headers=_html("de")).text
    assert "Sportbereich" in book and "Tennisplatz 2" in book
    week = client.get("/book/resource/court-2", headers=_html("fr")).text
    assert "<h1>Court de tennis n° 2</h1>" in week and "Espace sportif" in week
    # Book it, and see it named in "my reservations".
    link = next(
        u.replace("&amp;", "&")
        for u in re.findall(r'href="(/book/new\?[^"]+)"', book)
        if "resource=court-2" in u
    )
    form_page = client.get(link, headers=_html("de")).text
    assert "Tennisplatz 2" in form_page
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form_page))
    minutes = re.search(r'<option value="(\d+)" selected', form_page)
    assert minutes is not None
    assert client.post("/book/new", data={**form, "minutes": minutes.group(1)}).status_code == 200
    mine = client.get("/reservations", headers=_html("fr")).text
    assert "Court de tennis n° 2" in mine
    assert "Tennis court 2" in client.get("/reservations", headers=_html("en")).text


@pytest.mark.usefixtures("named_site")
def test_manager_pages_doors_board_and_reports_name_places_in_the_page_language(client, make_user):
    _sign_in(client, make_user, {"role": "venue_manager", "venue": "sports"})
    venues = client.get("/manage", headers=_html("de")).text
    assert "Sportbereich" in venues and "Tennisplatz 2" in venues and "Wohnanlage Linden" in venues
    venue = client.get("/manage/venues/sports", headers=_html("fr")).text
    assert "Espace sportif" in venue and "Court de tennis n° 2" in venue
    assert "Court de tennis n° 2" in client.get("/manage/resources/court-2", headers=_html("fr")).text
    assert "Sportbereich" in client.get("/moderation", headers=_html("de")).text  # the venue filter
    doors = client.get("/doors", headers=_html("de")).text
    assert "Tennisplatz 2" in doors  # the courts gate's resources
    reports = client.get("/reports", headers=_html("fr")).text
    assert reports.count("Court de tennis n° 2") >= 2 and "Tennis court 2" not in reports


@pytest.mark.usefixtures("named_site")
def test_reception_and_admin_name_the_site_in_the_page_language(client, make_user):
    _sign_in(client, make_user, {"role": "reception", "site": "les-tilleuls"}, {"role": "admin"})
    assert "Wohnanlage Linden" in client.get("/reception", headers=_html("de")).text
    assert "Linden Residence" in client.get("/reception", headers=_html("en")).text
    sites = client.get("/admin/sites", headers=_html("fr")).text
    assert "Résidence Les Tilleuls" in sites and "Espace sportif" in sites


@pytest.mark.usefixtures("named_site")
def test_messages_name_places_in_the_recipient_language(engine):
    from sqlmodel import select

    from bms.models import Resource
    from core.db import open_session
    from core.models import Site, Venue
    from notify.messages import Context, _names

    with open_session(engine) as s:
        court = s.exec(select(Resource).where(Resource.key == "court-2")).one()
        venue = s.get(Venue, court.venue_id)
        site = s.exec(select(Site).where(Site.key == "les-tilleuls")).one()
        ctx = Context(event_id=1, kind="reservation.confirmed", payload={}, resource=court, venue=venue, site=site)
        assert _names(ctx, "de") == {"resource": "Tennisplatz 2", "venue": "Sportbereich", "site": "Wohnanlage Linden"}
        assert _names(ctx, "en")["resource"] == "Tennis court 2"
        ctx.resource = s.exec(select(Resource).where(Resource.key == "court-1")).one()
        assert _names(ctx, "fr")["resource"] == "Tennis court 1"  # no French name: the default
