"""The catalogs: every message id of the portal's, the notifications' and the visitors' sources is
translated into French and German and compiled; the language of a page follows the user's
choice, then the browser, then the site."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.support import Translations

from core.i18n import LEGACY, LOCALE_DIR, pick_locale, translator

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def _source_ids() -> set[str]:
    with open(ROOT / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = {**DEFAULT_KEYWORDS, "t": None, "N_": None}
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords, directory_filter=lambda d: "/." not in d
    ):
        ids.add(message if isinstance(message, str) else message[0])
    return ids - set(LEGACY)  # old key-style ids resolve through their English text


def test_the_sources_carry_messages():
    ids = _source_ids()
    assert "Find a free slot" in ids and "My reservations" in ids


@pytest.mark.parametrize("lang", ["fr", "de"])
def test_every_message_is_translated_and_compiled(lang):
    ids = _source_ids()
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh, locale=lang)
    compiled = Translations.load(str(LOCALE_DIR), [lang])
    missing, fuzzy, stale, placeholders = [], [], [], []
    for msgid in sorted(ids):
        msg = catalog.get(msgid)
        if msg is None or not msg.string or (not isinstance(msg.string, str) and not all(msg.string)):
            missing.append(msgid)
            continue
        if msg.fuzzy:
            fuzzy.append(msgid)
        text = msg.string if isinstance(msg.string, str) else msg.string[0]
        if compiled.gettext(msgid) != text and not isinstance(msg.id, tuple):
            stale.append(msgid)
        if set(PLACEHOLDER.findall(text)) != set(PLACEHOLDER.findall(msgid)):
            placeholders.append(msgid)
    assert not missing, f"{lang}: untranslated (run `make i18n` and translate): {missing}"
    assert not fuzzy, f"{lang}: fuzzy translations to check: {fuzzy}"
    assert not stale, f"{lang}: the .mo is older than the .po (run `make i18n`): {stale}"
    assert not placeholders, f"{lang}: placeholders differ from the English: {placeholders}"


def test_messages_are_translated_then_formatted():
    assert translator("fr")("Hello, {name}", name="Alice") == "Bonjour, Alice"
    assert translator("de")("Book {name}", name="Platz 1") == "Platz 1 buchen"
    assert translator("en")("Hello, {name}", name="Alice") == "Hello, Alice"
    # old key-style ids still work where a page has not moved to English ids yet
    assert translator("de")("doors.title") == "Türen und Steuerungen"
    assert translator("fr")("an id nobody translated") == "an id nobody translated"


def test_choice_first_then_browser_then_site():
    assert pick_locale("de", "fr-FR,fr;q=0.9", "en") == "de"  # the user's explicit choice
    assert pick_locale(None, "fr-FR,fr;q=0.9,en;q=0.5", "de") == "fr"  # then the browser
    assert pick_locale(None, "en;q=0.3, de;q=0.8", "fr") == "de"  # q-values honoured
    assert pick_locale(None, "es-ES, it", "fr") == "fr"  # nothing supported: the site's
    assert pick_locale(None, None, "de") == "de"
    assert pick_locale("xx", "de;q=0", "xx") == "en"


def test_a_page_follows_the_browser_until_the_user_chooses(client, make_user, example_site):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Zoé")
    html = {"Accept": "text/html"}
    client.post("/login", data={"email": user.email, "password": password})
    # The account's stored default does not override the browser.
    assert "Bonjour, Zoé" in client.get("/", headers={**html, "Accept-Language": "fr"}).text
    assert "Hallo, Zoé" in client.get("/", headers={**html, "Accept-Language": "de-DE"}).text
    r = client.post("/lang", data={"lang": "de", "next": "/profile"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/profile"
    page = client.get("/", headers={**html, "Accept-Language": "fr"})  # the choice wins now
    assert "Hallo, Zoé" in page.text and '<html lang="de">' in page.text
    assert client.get("/api/v1/users/me").json()["locale"] == "de"  # messages follow it too
    # An address elsewhere is never a redirect target.
    r = client.post("/lang", data={"lang": "fr", "next": "//evil.example.net/"}, follow_redirects=False)
    assert r.headers["location"] == "/"


def test_without_a_browser_language_the_site_decides(client, make_user, example_site):
    user, password = make_user({"role": "resident", "site": "les-tilleuls"}, name="Yann")  # a site in French
    client.post("/login", data={"email": user.email, "password": password})
    assert "Bonjour, Yann" in client.get("/", headers={"Accept": "text/html"}).text
