"""A controller's settings are its driver family's to check (the drivers' registry), when a site
file is imported: from a file, over HTTP, or handed to `apply_site_file` already parsed. A bad one
refuses the whole file with its path; an unknown driver is named."""

from __future__ import annotations

import pytest
import yaml
from sqlmodel import func, select

from access.models import Controller
from bookgate.provision import apply_site_file, import_site_file, parse_site
from config.site import SiteFileError, example_path, parse_site_document
from core.audit import SYSTEM
from core.db import read_session

DOORIP = "sites.0.controllers.1.settings.doorip: String should match pattern '^\\d{1,3}(\\.\\d{1,3}){3}$'"


def _example() -> dict:
    return yaml.safe_load(example_path().read_text())


def _bad_doorip() -> dict:
    data = _example()
    data["sites"][0]["controllers"][1]["settings"]["doorip"] = "courts.local"
    return data


def _controllers(engine) -> int:
    with read_session(engine) as s:
        return s.exec(select(func.count()).select_from(Controller)).one()


def test_a_bad_esprfid_setting_is_refused_with_its_path():
    with pytest.raises(SiteFileError) as info:
        parse_site(_bad_doorip())
    assert info.value.errors == [DOORIP]


def test_settings_errors_are_listed_with_the_other_field_errors():
    data = _bad_doorip()
    data["sites"][0]["timezone"] = "Europe/Atlantis"
    data["sites"][0]["controllers"][0]["settings"] = {"topic": "a/#", "doorip": "10.0.0.1", "colour": "red"}
    data["sites"][0]["controllers"][4]["settings"]["address"] = "nope"
    with pytest.raises(SiteFileError) as info:
        parse_site(data)
    errors = info.value.errors
    assert "sites.0.timezone: unknown IANA time zone 'Europe/Atlantis'" in errors
    assert DOORIP in errors
    assert any(e.startswith("sites.0.controllers.0.settings.topic: ") for e in errors)
    assert "sites.0.controllers.0.settings.colour: Extra inputs are not permitted" in errors
    assert any(e.startswith("sites.0.controllers.4.settings.address: ") for e in errors)


def test_an_unknown_driver_is_refused_by_name():
    data = _example()
    data["sites"][0]["controllers"][3]["driver"] = "zwave"
    with pytest.raises(SiteFileError) as info:
        parse_site(data)
    assert info.value.errors == ["sites.0.controllers.3.driver: unknown driver 'zwave' (one of: esprfid, osdp, ble)"]
    data["sites"][0]["controllers"][3]["driver"] = "Z-Wave"  # not even a kind's name: said once
    with pytest.raises(SiteFileError) as info:
        parse_site(data)
    assert [e.split(": ")[0] for e in info.value.errors] == ["sites.0.controllers.3.driver"]


def test_osdp_and_ble_settings_are_still_checked():
    data = _example()
    data["sites"][0]["controllers"][3]["settings"]["baud"] = 1200
    data["sites"][0]["controllers"][4]["settings"] = {}
    with pytest.raises(SiteFileError) as info:
        parse_site(data)
    assert [e.split(": ")[0] for e in info.value.errors] == [
        "sites.0.controllers.3.settings.baud",
        "sites.0.controllers.4.settings.address",
    ]


def test_a_file_with_a_bad_setting_is_refused_whole(engine, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_bad_doorip()))
    with pytest.raises(SiteFileError) as info:
        import_site_file(engine, bad, SYSTEM)
    assert info.value.errors == [DOORIP]
    # the schema alone (config.site knows no driver) lets it through; the write gate does not
    doc = parse_site_document(_bad_doorip())
    with pytest.raises(SiteFileError) as info:
        apply_site_file(engine, doc, SYSTEM)
    assert info.value.errors == [DOORIP]
    assert _controllers(engine) == 0


def test_http_import_refuses_a_bad_setting(client, admin_headers, engine):
    r = client.post("/api/v1/site-config", content=yaml.safe_dump(_bad_doorip()), headers=admin_headers)
    assert r.status_code == 422 and r.json()["code"] == "bad_site_file"
    field, message = DOORIP.split(": ", 1)
    assert r.json()["errors"] == [{"field": field, "code": "bad_site_file", "message": message}]
    assert _controllers(engine) == 0


def test_the_example_imports_with_every_kind_stored(engine):
    import_site_file(engine, example_path(), SYSTEM)
    with read_session(engine) as s:
        kinds = {c.key: c.driver for c in s.exec(select(Controller))}
    assert kinds["garage-ctl"] == "ble" and kinds["cabinet-ctl"] == "osdp" and kinds["courts-ctl"] == "esprfid"
    assert kinds["garage-door-ctl"] == "osdp"
