from __future__ import annotations

import stat

import pytest
from pydantic import ValidationError

from config import Settings


def test_secret_key_generated_once_with_0600(tmp_path):
    s = Settings(var_dir=tmp_path / "var", _env_file=None)
    key = s.effective_secret_key()
    path = tmp_path / "var" / "secret_key"
    assert len(key) >= 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(var_dir=tmp_path / "var", _env_file=None).effective_secret_key() == key


def test_environment_is_read_with_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("BOOKGATE_DATABASE_URL", "postgresql://u@db.example.com/bookgate")
    monkeypatch.setenv("BOOKGATE_PORT", "9000")
    s = Settings(_env_file=None)
    assert s.effective_database_url == "postgresql+psycopg://u@db.example.com/bookgate"
    assert s.port == 9000


def test_default_database_is_sqlite_in_var(tmp_path):
    s = Settings(var_dir=tmp_path / "v", _env_file=None)
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'v' / 'core.db').resolve()}"


@pytest.mark.parametrize(("field", "value"), [("timezone", "Mars/Olympus"), ("locale", "xx"), ("port", "0")])
def test_bad_settings_are_refused(monkeypatch, field, value):
    monkeypatch.setenv(f"BOOKGATE_{field.upper()}", value)
    with pytest.raises(ValidationError, match=field):
        Settings(_env_file=None)
