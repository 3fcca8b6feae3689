"""The ``gatekeeper`` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gatekeeper.config import VAR_DIR, load_settings
from gatekeeper.db import Database
from gatekeeper.errors import GatekeeperError
from gatekeeper.register.context import context_from


@click.group()
def main() -> None:
    """gatekeeper: keep French/EU marketing campaigns lawful."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to the configured database."""
    from gatekeeper.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@main.group()
def apikey() -> None:
    """API keys (stored hashed; shown once)."""


@apikey.command("create")
@click.option("--name", required=True, help="who or what uses the key")
@click.option("--scopes", default=None, help="comma-separated; default: every scope but audit")
def apikey_create(name: str, scopes: str | None) -> None:
    """Create a key and print it alone on the last line."""
    from gatekeeper.api.auth import DEFAULT_SCOPES, create_api_key

    settings = load_settings()
    chosen = tuple(s.strip() for s in scopes.split(",") if s.strip()) if scopes else DEFAULT_SCOPES
    database = Database(settings.database_url)
    try:
        with database.session_scope() as session:
            key = create_api_key(session, context_from(settings).hasher, name, chosen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"API key {name!r} with scopes {', '.join(chosen)} (shown once; store it now):", err=True)
    click.echo(key)


@apikey.command("bootstrap")
def apikey_bootstrap() -> None:
    """First run of `make run`: create a key if none exists and print it (dev only)."""
    from sqlalchemy import func, select

    from gatekeeper.api.auth import DEFAULT_SCOPES, create_api_key
    from gatekeeper.models import ApiKey

    settings = load_settings()
    database = Database(settings.database_url)
    with database.session_scope() as session:
        if session.scalar(select(func.count()).select_from(ApiKey)):
            click.echo("API keys exist already (gatekeeper apikey create --name NAME for another).")
            return
        key = create_api_key(session, context_from(settings).hasher, "make run", DEFAULT_SCOPES)
    if settings.is_dev:
        # Dev convenience for the README's curl examples; var/ is never committed.
        (VAR_DIR / "dev-api-key.txt").write_text(key + "\n")
    click.echo(f"Your API key (also in var/dev-api-key.txt):\n{key}")


@main.command("mailsink")
@click.option("--port", default=8025, show_default=True, type=int)
def mailsink(port: int) -> None:
    """A local SMTP server keeping every message under var/mail/."""
    import time

    from gatekeeper.mailsink import start_sink

    controller = start_sink(VAR_DIR / "mail", port=port)
    click.echo(f"mail sink on 127.0.0.1:{port}, messages in {VAR_DIR / 'mail'}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


@main.command("run")
@click.option("--port", default=8000, show_default=True, type=int)
def run_all(port: int) -> None:
    """The whole service for development: mail sink, web service (gunicorn), side by side."""
    import signal
    import subprocess
    import time

    load_settings()
    exe = [sys.executable, "-m", "gatekeeper.cli"]
    children = [subprocess.Popen([*exe, "mailsink"]),  # noqa: S603 - our own interpreter and module
                subprocess.Popen([*exe, "serve", "--port", str(port)])]  # noqa: S603
    click.echo(f"gatekeeper on http://127.0.0.1:{port}/  (OpenAPI: /api/v1/openapi.json; Ctrl-C stops)")
    try:
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=15)


@main.command("import")
@click.argument("kind", type=click.Choice(["contacts", "events", "suppressions"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(kind: str, file: Path) -> None:
    """Import a CSV file, all-or-nothing, with a progress bar."""
    from gatekeeper.register.imports import count_rows, import_file

    settings = load_settings()
    ctx = context_from(settings)
    database = Database(settings.database_url)
    total = count_rows(file)
    try:
        with click.progressbar(length=total, label=f"importing {kind}", file=sys.stderr) as bar:
            last = [0]

            def progress(n: int) -> None:
                bar.update(n - last[0])
                last[0] = n

            with database.session_scope() as session:
                result = import_file(session, kind, file, ctx, progress)
            bar.update(total - last[0])
    except GatekeeperError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for d in exc.details:
            click.echo(f"  row {d.get('row')}: {d.get('field') or '-'}: {d.get('problem')}", err=True)
        sys.exit(1)
    click.echo(", ".join(f"{k}: {v}" for k, v in result.items()))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Run the web service under gunicorn (the werkzeug dev server is not the service)."""
    load_settings()  # refuse to start without secrets outside dev, before forking workers
    args = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--access-logfile", "-", "gatekeeper.wsgi:app"]
    os.execv(sys.executable, args)  # noqa: S606 - replaces this process with gunicorn


if __name__ == "__main__":
    main()
