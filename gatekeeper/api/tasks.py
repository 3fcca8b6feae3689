"""Run a scheduled task now, and the retention forecast (API.md "Retention and mailing")."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request

from gatekeeper.api import bp
from gatekeeper.api.auth import requires
from gatekeeper.api.helpers import as_of_param
from gatekeeper.api.openapi import _AS_OF, _STR, _TS, PATHS, _obj, _ok
from gatekeeper.db import get_database, request_session
from gatekeeper.errors import MalformedError, NotFoundError, ValidationError
from gatekeeper.links import links_of
from gatekeeper.retention.forecast import MAX_MONTHS, forecast
from gatekeeper.retention.tasks import TASKS, TaskEnv, build_env, run_task


def task_env(app: Flask) -> TaskEnv:
    """Built on first use, with the app's link signer (one clock for links and messages)."""
    env: TaskEnv | None = app.extensions.get("gatekeeper.retention")
    if env is None:
        env = build_env(app.extensions["gatekeeper.settings"], signer=links_of(app))
        app.extensions["gatekeeper.retention"] = env
    return env


@bp.post("/tasks/<name>/run")
@requires("tasks")
def run_task_now(name: str) -> Response:
    if name not in TASKS:
        raise NotFoundError(f"no task {name!r}; known: {', '.join(TASKS)}")
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise MalformedError('the body must be a JSON object, e.g. {"as_of": "2026-11-24"}')
    as_of = as_of_param(body)
    result = run_task(
        get_database(current_app), task_env(current_app), name, as_of, dry_run=bool(body.get("dry_run"))
    )
    return jsonify(result)


@bp.get("/retention/forecast")
@requires("register:read")
def retention_forecast() -> Response:
    raw = request.args.get("months", "12")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_MONTHS:
        raise ValidationError(
            f"months must be an integer from 1 to {MAX_MONTHS}",
            [{"field": "months", "problem": "out of range"}],
        )
    return jsonify(forecast(request_session(), as_of_param(), int(raw)))


# The OpenAPI document describes every route; ours are added here, next to their views.
_TASK_RESULT = {
    "type": "object",
    "description": "task, as_of, dry_run, then batches and done "
    "(counts by outcome), or the would_* counts of a dry run",
}
PATHS.update(
    {
        "/api/v1/tasks/{name}/run": {
            "post": {
                "summary": "Run a scheduled task now (plan_reconsent, send_outbox, purge_expired,"
                " journal_catch_up); "
                "idempotent per day; returns what it did",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["plan_reconsent", "send_outbox", "purge_expired", "journal_catch_up"],
                        },
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {"schema": _obj({"as_of": _TS, "dry_run": {"type": "boolean"}})}
                    },
                },
                "responses": _ok(_TASK_RESULT),
            }
        },
        "/api/v1/retention/forecast": {
            "get": {
                "summary": "Contacts reaching each retention state per month (Europe/Paris months)",
                "parameters": [
                    _AS_OF,
                    {
                        "name": "months",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_MONTHS, "default": 12},
                    },
                ],
                "responses": _ok(
                    _obj(
                        {
                            "as_of": _TS,
                            "months": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "month": _STR,
                                        "reconsent_due": {"type": "integer"},
                                        "expired": {"type": "integer"},
                                    }
                                ),
                            },
                            "now": {"type": "object"},
                        }
                    )
                ),
            }
        },
    }
)
