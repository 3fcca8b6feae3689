"""The campaign list job: decide an uploaded list in the background, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.gate.runs import run_list
from gatekeeper.jobs import Progress, job_kind
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.imports import count_rows
from gatekeeper.timeparse import parse_instant


@job_kind("campaign_list", reads_first=True)
def run_campaign_list(
    session: Session,
    params: dict[str, Any],
    progress: Progress,
    ctx: RegisterContext,
    services: dict[str, Any],
) -> dict[str, Any]:
    path = Path(params["path"])
    progress(0, count_rows(path))
    try:
        # Unsubscribes journaled while the database was busy, recorded before the list is read
        # (a background job may wait for a long import to end: app.SETTLE_JOB_WAIT_SECONDS).
        if "settle" in services:
            services["settle"]()
        return run_list(
            session,
            ctx,
            int(params["campaign_id"]),
            parse_instant(params["as_of"]),
            path,
            lambda n: progress(n, None),
            links=services.get("links"),
            job_id=params.get("job_id"),
            record=services["database"].session_scope,
        )
    finally:
        path.unlink(missing_ok=True)
