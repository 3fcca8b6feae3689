"""The WSGI entry point for gunicorn: ``gatekeeper.wsgi:app``."""

from gatekeeper.app import create_app

app = create_app()
