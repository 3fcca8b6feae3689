"""Settings: built-in defaults < config/gatekeeper.toml < GATEKEEPER_* environment variables.

Secrets are read from the environment only; outside ``env = "dev"`` the service refuses to
start without them, so a forgotten variable can never silently fall back to a known key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
VAR_DIR = PROJECT_ROOT / "var"

# Keys that may only come from the environment (never from a file in the repository).
SECRET_KEYS = ("secret_key", "hash_key", "old_secret_keys", "webhooks")
_DEV_SECRET = "dev-only-not-secret"  # noqa: S105 - used only when env == "dev"


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "production"
    database_url: str = f"sqlite:///{VAR_DIR / 'gatekeeper.db'}"
    archive_database_url: str = f"sqlite:///{VAR_DIR / 'archive.db'}"
    smtp_url: str = "smtp://127.0.0.1:8025"
    public_base_url: str = "http://127.0.0.1:8000"
    secret_key: str = ""
    # Keys for HMAC of suppressed coordinates and API keys; defaults to secret_key. Kept
    # separate so link-signing keys can rotate without re-hashing the suppression list.
    hash_key: str = ""
    # Older signing secrets, comma separated: still verify links already sent.
    old_secret_keys: str = ""
    policy: str = "fr-2026"
    default_region: str = "FR"
    max_body_bytes: int = 64 * 1024 * 1024
    api_max_items: int = 10_000
    mail_from: str = "ACME SAS <newsletter@acme.example>"
    sender_entity: str = "ACME SAS"
    rate_limit_per_minute: int = 120
    webhooks: str = ""  # JSON: {"mailgun": [{"signing_key": "..."}], ...}
    # Reverse proxies in front of the service whose X-Forwarded-* headers are trusted (0: none).
    # Rate limits and the IP kept as proof of a consent need the client's address, not the proxy's.
    trusted_proxies: int = 0
    # The local journal of clicks and webhook events applied in batches (gatekeeper/spool.py),
    # and whether each append also waits for the disk (power-loss durability, much slower).
    spool_dir: str = str(VAR_DIR / "spool")
    spool_fsync: bool = False

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @property
    def policy_path(self) -> Path:
        return CONFIG_DIR / "policies" / f"{self.policy}.toml"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return str(raw).lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {name!r} must be an integer, got {raw!r}") from exc
    return str(raw)


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    path = config_file or Path(environ.get("GATEKEEPER_CONFIG", CONFIG_DIR / "gatekeeper.toml"))
    values: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as fh:
            values.update(tomllib.load(fh))
    known = {f.name: f.default for f in fields(Settings)}
    for secret in SECRET_KEYS:
        if secret in values:
            raise ConfigError(f"{secret!r} must come from GATEKEEPER_{secret.upper()}, not a file")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    for name in known:
        env_value = environ.get(f"GATEKEEPER_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    values.update(overrides or {})
    settings = Settings(**{k: _coerce(k, v, known[k]) for k, v in values.items()})
    return _check_secrets(settings)


def _check_secrets(settings: Settings) -> Settings:
    if not settings.secret_key:
        if not settings.is_dev:
            raise ConfigError(
                "GATEKEEPER_SECRET_KEY is required outside dev (set GATEKEEPER_ENV=dev to develop)"
            )
        settings = replace(settings, secret_key=_DEV_SECRET)
    if not settings.hash_key:
        settings = replace(settings, hash_key=settings.secret_key)
    return settings
