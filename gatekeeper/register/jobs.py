"""Import jobs: the API's ``POST /api/v1/imports`` runs ``import_file`` in the background."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.jobs import Progress, job_kind
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.imports import PROGRESS_EVERY, count_rows, import_file


@job_kind("import")
def run_import(
    session: Session,
    params: dict[str, Any],
    progress: Progress,
    ctx: RegisterContext,
    _services: dict[str, Any],
) -> dict[str, Any]:
    path = Path(params["path"])
    total = count_rows(path)
    progress(0, total)
    try:
        return import_file(session, params["kind"], path, ctx, lambda n: progress(n, None))
    finally:
        path.unlink(missing_ok=True)


__all__ = ["PROGRESS_EVERY", "run_import"]
