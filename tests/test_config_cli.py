"""Settings precedence, the secret requirement, and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.config import load_settings
from gatekeeper.errors import ConfigError


def test_the_service_refuses_to_start_outside_dev_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEKEEPER_SECRET_KEY"):
        load_settings(environ={}, config_file=tmp_path / "none.toml")
    dev = load_settings(environ={"GATEKEEPER_ENV": "dev"}, config_file=tmp_path / "none.toml")
    assert dev.secret_key and dev.hash_key == dev.secret_key


def test_environment_beats_file_beats_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "gk.toml"
    cfg.write_text('default_region = "BE"\nsmtp_url = "smtp://file:25"\n')
    s = load_settings(
        environ={"GATEKEEPER_SECRET_KEY": "k", "GATEKEEPER_SMTP_URL": "smtp://env:25"},
        config_file=cfg,
    )
    assert (s.default_region, s.smtp_url, s.policy) == ("BE", "smtp://env:25", "fr-2026")


@pytest.mark.parametrize("key", ["secret_key", "hash_key", "old_secret_keys", "webhooks"])
def test_secrets_are_refused_in_the_config_file(tmp_path: Path, key: str) -> None:
    cfg = tmp_path / "gk.toml"
    cfg.write_text(f'{key} = "oops"\n')
    with pytest.raises(ConfigError, match=f"GATEKEEPER_{key.upper()}"):
        load_settings(environ={}, config_file=cfg)


def test_unknown_settings_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "gk.toml"
    cfg.write_text('databse_url = "x"\n')
    with pytest.raises(ConfigError, match="databse_url"):
        load_settings(environ={"GATEKEEPER_ENV": "dev"}, config_file=cfg)


def _cli(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEKEEPER_DATABASE_URL": db_url,
        "GATEKEEPER_SECRET_KEY": "cli-test-secret",
    }
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_apikey_create_prints_the_key_alone_on_its_last_line_and_imports_show_progress(
    db_url: str, tmp_path: Path
) -> None:
    out = _cli(db_url, "apikey", "create", "--name", "crm", "--scopes", "register:read,gate")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("gk_") and " " not in key
    csv = tmp_path / "contacts.csv"
    csv.write_text("email,collected_at\na@example.fr,2025-01-01\nb@example.fr,2025-01-01\n")
    out = _cli(db_url, "import", "contacts", str(csv))
    assert out.returncode == 0, out.stderr
    assert "created: 2" in out.stdout
    assert "importing contacts" in out.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("email,collected_at\nnope,2025-01-01\n")
    out = _cli(db_url, "import", "contacts", str(bad))
    assert out.returncode == 1
    assert "row 1: email: invalid e-mail" in out.stderr


def test_unknown_scopes_are_refused(db_url: str) -> None:
    out = _cli(db_url, "apikey", "create", "--name", "x", "--scopes", "root")
    assert out.returncode == 2
    assert "unknown scope" in out.stderr
