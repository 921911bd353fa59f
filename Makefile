PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint chromium clean screenshots i18n

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bookgate demo

test: $(STAMP) chromium
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1)) \
	    || echo "chromium could not be installed: browser tests will be skipped"; \
	  else echo "chromium missing and not installable here (needs root and apt-get): browser tests will be skipped"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The portal's catalogs: extract every t()/N_() message id, merge into en/fr/de, compile the .mo files.
i18n: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k t -k N_ --no-location --sort-output --omit-header -o portal/locale/messages.pot .
	for lang in en fr de; do \
	  test -f portal/locale/$$lang/LC_MESSAGES/messages.po || \
	    $(BIN)/pybabel init -D messages -i portal/locale/messages.pot -d portal/locale -l $$lang; \
	done
	$(BIN)/pybabel update -D messages -i portal/locale/messages.pot -d portal/locale --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -D messages -d portal/locale --statistics

clean:
	rm -rf $(VENV) var .pytest_cache

# Refresh the README's screenshots from the browser tests (a normal test run leaves docs/ alone).
screenshots: $(STAMP) chromium
	BOOKGATE_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/e2e/test_portal_resident.py tests/e2e/test_portal_manager.py
