"""Names of sites, venues and resources per language in the site file: validated against the
supported languages, stored beside the default name, re-imported without a write, and given by
the API beside `name`."""

from __future__ import annotations

import copy

import pytest
import yaml
from sqlmodel import select

from bms.models import Resource
from bookgate.provision import apply_site_file, parse_site
from config.site import SiteFileError, example_path
from core.audit import SYSTEM, AuditEntry
from core.db import read_session
from core.models import Site, Venue


def _example() -> dict:
    return yaml.safe_load(example_path().read_text())


def _errors(data: dict) -> list[str]:
    with pytest.raises(SiteFileError) as err:
        parse_site(data)
    return err.value.errors


def test_a_name_is_a_string_or_one_per_supported_language():
    data = _example()
    site = data["sites"][0]
    site["name"] = {"en": "The Limes", "xx": "?"}
    site["venues"][0]["name"] = {}
    site["venues"][0]["resources"][0]["name"] = {"fr": ""}
    site["venues"][1]["name"] = ["Common rooms"]
    site["venues"][1]["resources"][0]["name"] = "x" * 201
    errors = _errors(data)
    assert "sites.0.name: unsupported language 'xx'; use en, fr, de" in errors
    assert "sites.0.venues.0.name: give at least one language" in errors
    assert "sites.0.venues.0.resources.0.name: fr: a name is 1 to 200 characters" in errors
    assert any(e.startswith("sites.0.venues.1.name: a name, or a mapping of language to name") for e in errors)
    assert "sites.0.venues.1.resources.0.name: a name is 1 to 200 characters" in errors


def test_the_first_language_given_is_the_default_name():
    data = _example()
    data["sites"][0]["name"] = {"fr": "Résidence Les Tilleuls", "de": "Wohnanlage Die Linden"}
    doc = parse_site(data)
    assert doc.sites[0].name == "Résidence Les Tilleuls"
    assert doc.sites[0].name.names == {"fr": "Résidence Les Tilleuls", "de": "Wohnanlage Die Linden"}
    court = doc.sites[0].venues[0].resources[0]
    assert court.name == "Tennis court 1" and court.name.names == {}  # a plain string stays valid


def _audits(engine) -> int:
    with read_session(engine) as s:
        return len(s.exec(select(AuditEntry.id)).all())


def test_names_are_stored_and_a_reimport_writes_nothing(engine):
    doc = parse_site(_example())
    first = apply_site_file(engine, doc, SYSTEM)
    assert first.changed
    with read_session(engine) as s:
        venue = s.exec(select(Venue).where(Venue.key == "sports")).one()
        court2 = s.exec(select(Resource).where(Resource.key == "court-2")).one()
        court1 = s.exec(select(Resource).where(Resource.key == "court-1")).one()
        site = s.exec(select(Site).where(Site.key == "les-tilleuls")).one()
        assert (venue.name, venue.names["fr"], venue.names["de"]) == ("Sports area", "Espace sportif", "Sportbereich")
        assert court2.name == "Tennis court 2" and court2.names["de"] == "Tennisplatz 2"
        assert court1.names == {} and site.names == {}
    audits = _audits(engine)
    again = apply_site_file(engine, parse_site(_example()), SYSTEM)
    assert not again.changed and again.changes == []
    assert _audits(engine) == audits
    # A changed translation is an update of that row alone.
    data = copy.deepcopy(_example())
    data["sites"][0]["venues"][0]["name"] = {"en": "Sports area", "fr": "Terrains de sport", "de": "Sportbereich"}
    report = apply_site_file(engine, parse_site(data), SYSTEM)
    assert report.changes == ["updated venue sports: names"]
    with read_session(engine) as s:
        assert s.exec(select(Venue).where(Venue.key == "sports")).one().names["fr"] == "Terrains de sport"


def test_the_api_gives_the_names_beside_the_name(client, engine, admin_headers):
    apply_site_file(engine, parse_site(_example()), SYSTEM)
    court = client.get("/api/v1/resources/court-2", headers=admin_headers).json()
    assert court["name"] == "Tennis court 2" and court["names"]["fr"] == "Court de tennis n° 2"
    sites = client.get("/api/v1/sites", headers=admin_headers).json()
    sports = next(v for v in sites[0]["venues"] if v["key"] == "sports")
    assert sports == {"key": "sports", "name": "Sports area", "names": sports["names"]}
    assert sports["names"]["de"] == "Sportbereich"
