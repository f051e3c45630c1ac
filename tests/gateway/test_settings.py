"""handoff.settings: one table, environment > .env > default, validated with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from handoff.settings import SETTINGS, Settings, SettingsError, load_settings, settings_table


def test_defaults_with_secrets_from_var(tmp_path: Path) -> None:
    (tmp_path / "rasa-token").write_text("tok-from-file\n")
    settings = load_settings({}, env_file=None, var_dir=tmp_path)
    assert (settings.host, settings.port, settings.rasa_url) == (
        "127.0.0.1", 8000, "http://127.0.0.1:5005")
    assert settings.max_message_chars == 2000
    assert settings.rasa_token == "tok-from-file"
    assert settings.database_url.startswith("sqlite+aiosqlite:////")  # made absolute
    assert settings.database_url.endswith("/var/handoff.db")
    secret = (tmp_path / "jwt-secret").read_text().strip()
    assert settings.jwt_secret == secret and len(secret) >= 32
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert load_settings({}, env_file=None, var_dir=tmp_path).jwt_secret == secret  # kept
    assert "tok-from-file" not in repr(settings) and secret not in repr(settings)


def test_environment_beats_env_file_beats_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nHANDOFF_PORT=9001\nexport HANDOFF_HOST="0.0.0.0"\n'
                        "HANDOFF_RASA_TOKEN=t\n")
    settings = load_settings({"HANDOFF_PORT": "9002", "HANDOFF_JWT_SECRET": "s" * 32},
                             env_file=env_file, var_dir=tmp_path)
    assert (settings.port, settings.host, settings.rasa_token) == (9002, "0.0.0.0", "t")


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HANDOFF_PORT": "eighty", "HANDOFF_RASA_URL": "localhost:5005",
                       "HANDOFF_MAX_MESSAGE_CHARS": "0", "HANDOFF_JWT_SECRET": "short",
                       "HANDOFF_RASA_TOKEN": "t", "HANDOFF_PROT": "1",
                       "HANDOFF_LOG_LEVEL": "loud"},
                      env_file=None, var_dir=tmp_path)
    message = str(caught.value)
    for variable in ("HANDOFF_PORT='eighty'", "HANDOFF_RASA_URL='localhost:5005'",
                     "HANDOFF_MAX_MESSAGE_CHARS='0': must be at least 1",
                     "HANDOFF_JWT_SECRET: must be at least 32 bytes",
                     "HANDOFF_PROT: unknown setting",
                     "HANDOFF_LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR"):
        assert variable in message


def test_a_pool_needs_a_turn_timeout_above_rasas_lock_lifetime(tmp_path: Path) -> None:
    """Several Rasa servers: a turn timeout not above the lifetime the gateway is told is
    refused (naming both settings and the fix); not told, it is Rasa's default (60 s) and a
    warning at start says so (``python -m handoff`` logs it); one server needs neither."""
    pool = {"HANDOFF_RASA_URL": "http://r1:5005,http://r2:5005", "HANDOFF_RASA_TOKEN": "t",
            "HANDOFF_JWT_SECRET": "s" * 32}
    with pytest.raises(SettingsError) as caught:
        load_settings({**pool, "HANDOFF_RASA_LOCK_LIFETIME": "30"}, env_file=None,
                      var_dir=tmp_path)
    assert ("HANDOFF_RASA_TIMEOUT (30 s) is not above the Rasa servers' lock lifetime "
            "(HANDOFF_RASA_LOCK_LIFETIME: 30 s) with 2 servers") in str(caught.value)
    assert "TICKET_LOCK_LIFETIME" in str(caught.value)
    told = load_settings({**pool, "HANDOFF_RASA_LOCK_LIFETIME": "20"}, env_file=None,
                         var_dir=tmp_path)
    assert (told.rasa_lock_lifetime, told.lock_lifetime_problem()) == (20.0, None)
    assumed = load_settings(pool, env_file=None, var_dir=tmp_path)
    assert "(HANDOFF_RASA_LOCK_LIFETIME: 60 s)" in (assumed.lock_lifetime_problem() or "")
    longer = load_settings({**pool, "HANDOFF_RASA_TIMEOUT": "61"}, env_file=None,
                           var_dir=tmp_path)
    assert longer.lock_lifetime_problem() is None
    one = load_settings({**pool, "HANDOFF_RASA_URL": "http://r1:5005",
                         "HANDOFF_RASA_LOCK_LIFETIME": "90"}, env_file=None, var_dir=tmp_path)
    assert one.lock_lifetime_problem() is None


def test_missing_rasa_token_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="HANDOFF_RASA_TOKEN: not set"):
        load_settings({"HANDOFF_JWT_SECRET": "s" * 32}, env_file=None, var_dir=tmp_path)


def test_the_table_documents_every_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {s.name for s in SETTINGS} == fields
    table = settings_table()
    for setting in SETTINGS:
        assert setting.help and f"`{setting.env}`" in table


def test_every_setting_is_documented_in_docs_api() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in docs, f"{setting.env} is not in docs/api.md"


def test_python_m_handoff_stops_on_bad_settings_with_a_clear_error(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "handoff"], cwd=root, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HANDOFF_ENV_FILE": str(tmp_path / "none"),
             "HANDOFF_PORT": "99999", "HANDOFF_RASA_TOKEN": "t", "HANDOFF_JWT_SECRET": "s" * 32},
    )
    assert result.returncode == 2
    assert "HANDOFF_PORT='99999': must be at most 65535" in result.stderr
