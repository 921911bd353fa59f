from __future__ import annotations

import copy

import pytest
import yaml
from sqlmodel import func, select

from access.models import Controller, Door, DoorResource
from bms.models import Resource, ResourceUnit
from bookgate.cli import main as cli_main
from bookgate.provision import apply_site_file, import_site_file, parse_site
from config.site import SiteFileError, example_path, load_site_file, parse_site_document
from core.audit import SYSTEM, AuditEntry
from core.db import read_session
from core.models import Site, Venue


def _example() -> dict:
    return yaml.safe_load(example_path().read_text())


def _counts(engine) -> dict[str, int]:
    with read_session(engine) as s:
        return {
            m.__name__: s.exec(select(func.count()).select_from(m)).one()
            for m in (Site, Venue, Resource, ResourceUnit, Controller, Door, DoorResource, AuditEntry)
        }


def test_example_describes_the_residence():
    doc = load_site_file(example_path())
    site = doc.sites[0]
    resources = {r.key: r for v in site.venues for r in v.resources}
    assert sum(r.kind == "court" for r in resources.values()) == 2
    assert resources["meeting-room"].kind == "room" and resources["party-room"].kind == "room"
    assert resources["visitor-parking"].pool.units == 20
    doors = {d.key: d for d in site.doors}
    assert doors["lobby-door"].shared and doors["garage-gate"].kind == "gate"
    assert doors["key-cabinet"].kind == "key_cabinet"


def test_import_is_idempotent(engine):
    first = import_site_file(engine, example_path(), SYSTEM)
    assert first.created["resource_unit"] == 20 + 5 and first.created["door"] == 7
    before = _counts(engine)
    second = import_site_file(engine, example_path(), SYSTEM)
    assert not second.changed and second.changes == []
    assert _counts(engine) == before  # not even an audit row


def test_edited_file_updates_in_place(engine):
    import_site_file(engine, example_path(), SYSTEM)
    with read_session(engine) as s:
        court_id = s.exec(select(Resource.id).where(Resource.key == "court-1")).one()
    data = _example()
    sports = data["sites"][0]["venues"][0]
    sports["resources"][0]["name"] = "Court central"
    garage = data["sites"][0]["venues"][2]
    garage["resources"][0]["pool"]["units"] = 18
    data["sites"][0]["doors"][1]["resources"] = ["court-1"]
    report = apply_site_file(engine, parse_site_document(data), SYSTEM)
    assert "updated resource court-1: name" in report.changes
    with read_session(engine) as s:
        court = s.exec(select(Resource).where(Resource.key == "court-1")).one()
        assert court.id == court_id and court.name == "Court central"
        units = s.exec(select(ResourceUnit).join(Resource).where(Resource.key == "visitor-parking")).all()
        assert sum(u.active for u in units) == 18 and len(units) == 20
        gate = s.exec(select(Door).where(Door.key == "court-gate")).one()
        links = s.exec(select(DoorResource).where(DoorResource.door_id == gate.id)).all()
        assert [link.resource_id for link in links] == [court_id]
        audit_rows = s.exec(select(AuditEntry).where(AuditEntry.action == "site.import")).all()
    assert len(audit_rows) == 2


def test_bad_file_is_refused_whole_with_every_error(engine, tmp_path):
    data = _example()
    site = data["sites"][0]
    site["timezone"] = "Europe/Atlantis"
    site["venues"][0]["resources"][0]["capacity"] = 0
    site["venues"][0]["resources"][1]["colour"] = "green"  # unknown field
    site["doors"][1]["controller"] = "no-such-ctl"
    site["doors"][2]["resources"] = ["meeting-room", "ghost-room"]
    site["venues"][1]["resources"][1]["key"] = "court-1"  # duplicate
    with pytest.raises(SiteFileError) as info:
        parse_site_document(data)
    errors = info.value.errors
    assert "sites.0.timezone: unknown IANA time zone 'Europe/Atlantis'" in errors
    assert any(e.startswith("sites.0.venues.0.resources.0.capacity:") for e in errors)
    assert any(e.startswith("sites.0.venues.0.resources.1.colour:") for e in errors)
    # Reference checks run only on a file whose fields parse; check them on their own.
    data2 = _example()
    s2 = data2["sites"][0]
    s2["doors"][1]["controller"] = "no-such-ctl"
    s2["doors"][2]["resources"] = ["meeting-room", "ghost-room"]
    s2["venues"][1]["resources"].append({"key": "court-1", "name": "Again", "kind": "court"})
    with pytest.raises(SiteFileError) as info:
        parse_site_document(data2)
    assert info.value.errors == [
        "sites.0.venues.1.resources.2.key: duplicate key 'court-1' (first at sites.0.venues.0.resources.0)",
        "sites.0.doors.1.controller: no controller 'no-such-ctl' in this site",
        "sites.0.doors.2.resources.1: no resource 'ghost-room' in this site",
    ]


def test_cli_refuses_bad_file_and_writes_nothing(engine, tmp_path, monkeypatch, capsys):
    data = _example()
    data["sites"][0]["controllers"][0]["settings"] = {"topic": "a/#"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BOOKGATE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    from config import get_settings

    get_settings.cache_clear()
    try:
        assert cli_main(["import", str(bad)]) == 1
        err = capsys.readouterr().err
        assert "refused, nothing written" in err and "sites.0.controllers.0" in err
        assert _counts(engine)["Site"] == 0
        broken = tmp_path / "broken.yaml"
        broken.write_text("sites: [\n  - key: x\n  name")
        assert cli_main(["import", str(broken)]) == 1
        assert "not valid YAML at line" in capsys.readouterr().err
        assert cli_main(["import", str(example_path())]) == 0
        assert _counts(engine)["Door"] == 7
    finally:
        get_settings.cache_clear()


def test_import_over_http(client, admin_headers, engine):
    body = example_path().read_text()
    r = client.post("/api/v1/site-config", content=body, headers={**admin_headers, "Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert r.json()["created"]["site"] == 1
    bad = copy.deepcopy(_example())
    bad["sites"][0]["doors"][0]["controller"] = "nope"
    r = client.post("/api/v1/site-config", content=yaml.safe_dump(bad), headers=admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "bad_site_file"
    assert r.json()["errors"] == [
        {"field": "sites.0.doors.0.controller", "code": "bad_site_file", "message": "no controller 'nope' in this site"}
    ]
    r = client.post("/api/v1/site-config", content=b"\xff\xfe", headers=admin_headers)
    assert r.status_code == 422
    sites = client.get("/api/v1/sites", headers=admin_headers).json()
    assert sites[0]["key"] == "les-tilleuls" and len(sites[0]["venues"]) == 3


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda s: s["venues"][0]["resources"][0].update(rules={"opening_hours": {"mon": ["25:00-26:00"]}}),
            "sites.0.venues.0.resources.0.rules.opening_hours",
        ),
        (
            lambda s: s["venues"][0]["resources"][0].update(
                access={"mode": "badge", "release": {"before_end": 5, "after_end": 5}}
            ),
            "sites.0.venues.0.resources.0.access.release",
        ),
        (lambda s: s["doors"][5].pop("slots"), "sites.0.doors.5"),
        (lambda s: s["controllers"][4]["settings"].update(address="nope"), "sites.0.controllers.4.settings.address"),
        (lambda s: s.update(key="Bad Key"), "sites.0.key"),
    ],
)
def test_field_errors_name_their_path(mutate, expected):
    data = _example()
    mutate(data["sites"][0])
    with pytest.raises(SiteFileError) as info:
        parse_site(data)  # the import's parse: the controllers' settings are their drivers' to check
    assert any(e.startswith(expected) for e in info.value.errors), info.value.errors


def test_sites_list_shows_only_the_callers_sites(client, make_user, example_site):
    from tests.conftest import login

    outsider, pw = make_user(name="Outsider")
    assert client.get("/api/v1/sites", headers=login(client, outsider.email, pw)).json() == []
    manager, pw = make_user({"role": "venue_manager", "venue": "garage"})
    sites = client.get("/api/v1/sites", headers=login(client, manager.email, pw)).json()
    assert [s["key"] for s in sites] == ["les-tilleuls"]
