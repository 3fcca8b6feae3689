"""The public HTTP API v1 (see ../shared/docs/API.md): a blueprint per concern."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from gatekeeper.api import auth, gate, links, openapi, proof, register, tasks  # noqa: E402, F401  (views attach to bp)
