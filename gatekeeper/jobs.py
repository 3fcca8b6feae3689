"""Background jobs for long work (CSV imports, campaign lists): a row in ``jobs`` with state
and progress, run by a small thread pool in the process that accepted it.

Progress is written in its own short transactions so ``GET /api/v1/jobs/{id}`` shows it while
the job's main transaction is still open; the main transaction commits all or nothing. On
SQLite a running job's progress is a small file beside the database instead: the job's own
transaction may hold the database's only write lock (a session that may write begins
IMMEDIATE), and an update of the jobs row from another connection would wait for the job's
commit while the job waits for the update: the busy timeout, then "database is locked".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from flask import Flask
from sqlalchemy import update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, object_session

from gatekeeper.config import VAR_DIR
from gatekeeper.db import Database, get_database, unavailable, when_writable
from gatekeeper.errors import GatekeeperError, TooLargeError
from gatekeeper.models import Job, utcnow
from gatekeeper.register.context import RegisterContext

log = logging.getLogger(__name__)
UPLOADS = VAR_DIR / "uploads"
Progress = Callable[[int, int | None], None]
# A job function gets its own session (the job's transaction), its parameters, a progress
# callback taking (done, total), the register context and the app's services (e.g. "links",
# the signer of public links), since it runs outside any request.
JobFn = Callable[[Session, dict[str, Any], Progress, RegisterContext, dict[str, Any]], dict[str, Any]]
_REGISTRY: dict[str, tuple[JobFn, bool]] = {}


def job_kind(name: str, *, reads_first: bool = False) -> Callable[[JobFn], JobFn]:
    """Register a job function. ``reads_first``: its session begins read-only, so on SQLite it
    reads without holding the write lock (a campaign list is decided for seconds while the API
    and the webhooks keep writing), and the job writes its result in a session of its own
    (``services["database"].session_scope()``)."""

    def register(fn: JobFn) -> JobFn:
        _REGISTRY[name] = (fn, reads_first)
        return fn

    return register


class JobRunner:
    def __init__(self, database: Database, ctx: RegisterContext, workers: int = 2) -> None:
        self.database = database
        self.ctx = ctx
        self.services: dict[str, Any] = {"database": database}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gk-job")
        self.futures: dict[int, Future[None]] = {}

    def submit(self, session: Session, kind: str, params: dict[str, Any], sha256: str | None = None) -> Job:
        if kind not in _REGISTRY:
            raise GatekeeperError(f"unknown job kind {kind!r}")
        job = Job(kind=kind, params=params, input_sha256=sha256, state="queued")
        session.add(job)
        session.flush()
        return job

    def start(self, job_id: int) -> None:
        """Called after the request committed the job row, so the worker can see it."""
        self.futures[job_id] = self.pool.submit(self._run, job_id)

    def wait(self, job_id: int, timeout: float = 120) -> None:
        future = self.futures.get(job_id)
        if future is not None:
            future.result(timeout=timeout)

    def _run(self, job_id: int) -> None:
        kind, params = when_writable(lambda: self._mark_running(job_id))
        try:
            job_fn, reads_first = _REGISTRY[kind]
            with self.database.session_scope(read_only=reads_first) as session:
                result = job_fn(session, params, self._progress(job_id), self.ctx, self.services)
        except GatekeeperError as exc:
            self._finish(
                job_id,
                "failed",
                {"message": exc.message},
                exc.details or [{"problem": exc.message}],
            )
        except OperationalError as exc:
            if not unavailable(exc):
                self._failed_internally(job_id, exc)
                return
            # Another writer held the database past the busy timeout (on SQLite, a long import
            # keeps the only write lock to its end): the job's transaction is rolled back whole.
            message = "the database was busy or unreachable; nothing was recorded, submit it again"
            self._finish(job_id, "failed", {"message": message}, [{"problem": message}])
        except Exception as exc:  # a job must end in a state the user can read, whatever happened
            self._failed_internally(job_id, exc)
        else:
            self._finish(job_id, "done", result, [])

    def _progress(self, job_id: int) -> Progress:
        path = progress_file(self.database.url, job_id)
        if path is not None:
            return _FileProgress(path)

        def report(done: int, total: int | None) -> None:
            values: dict[str, Any] = {"progress_done": done, "updated_at": utcnow()}
            if total is not None:
                values["progress_total"] = total
            with self.database.session_scope() as s:
                s.execute(update(Job).where(Job.id == job_id).values(**values))

        return report

    def _failed_internally(self, job_id: int, exc: Exception) -> None:
        log.exception("job %s failed", job_id, exc_info=exc)
        self._finish(job_id, "failed", {"message": "internal error"}, [{"problem": type(exc).__name__}])

    def _mark_running(self, job_id: int) -> tuple[str, dict[str, Any]]:
        with self.database.session_scope() as s:
            job = s.get_one(Job, job_id)
            job.state, job.updated_at = "running", utcnow()
            return job.kind, {**(job.params or {}), "job_id": job_id}

    def _finish(self, job_id: int, state: str, result: dict[str, Any], errors: list[Any]) -> None:
        # A job that could not say it ended would show "running" forever (and "queued" if it
        # could not say it started): its own short writes wait for a busy database.
        when_writable(lambda: self._write_end(job_id, state, result, errors))

    def _write_end(self, job_id: int, state: str, result: dict[str, Any], errors: list[Any]) -> None:
        path = progress_file(self.database.url, job_id)
        with self.database.session_scope() as s:
            job = s.get_one(Job, job_id)
            job.progress_done, job.progress_total = _progress_of(job, path)
            job.state, job.result, job.errors = state, result, errors
            job.finished_at = job.updated_at = utcnow()
            if state == "done" and job.progress_total is not None:
                job.progress_done = job.progress_total
        if path is not None:
            path.unlink(missing_ok=True)


def progress_file(database_url: str | URL, job_id: int) -> Path | None:
    """Where a running job's progress is kept on SQLite (see the module docstring): beside the
    database file, so every process serving that database reads the same one. None elsewhere."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(f"{url.database}-job-{job_id}.progress")


class _FileProgress:
    """(done, total) written to a file: replaced whole, so a reader never sees half of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.total = self.total if total is None else total
        partial = self.path.with_name(self.path.name + ".part")
        partial.write_text(json.dumps({"done": done, "total": self.total}))
        os.replace(partial, self.path)


def _progress_of(job: Job, path: Path | None) -> tuple[int, int | None]:
    """(done, total) of ``job``: from its row, or from the file a running job writes."""
    if path is not None:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):  # none written yet, or the job ended and removed it
            pass
        else:
            total = found["total"]
            return int(found["done"]), job.progress_total if total is None else int(total)
    return job.progress_done, job.progress_total


def save_upload(stream: IO[bytes], max_bytes: int) -> tuple[Path, str]:
    """Spool an upload to disk (never held in memory) and return its path and SHA-256."""
    UPLOADS.mkdir(parents=True, exist_ok=True)
    path = UPLOADS / f"{uuid.uuid4().hex}.csv"
    digest = hashlib.sha256()
    written = 0
    with path.open("wb") as out:
        while chunk := stream.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                out.close()
                path.unlink()
                raise TooLargeError(f"the upload exceeds {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest()


def job_view(job: Job) -> dict[str, Any]:
    session, path = object_session(job), None
    if job.state == "running" and session is not None:
        path = progress_file(session.get_bind().engine.url, job.id)
    done, total = _progress_of(job, path)
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": {"done": done, "total": total},
        "result": job.result or {},
        "errors": job.errors or [],
    }


def init_app(app: Flask) -> None:
    app.extensions["gatekeeper.jobs"] = JobRunner(get_database(app), app.extensions["gatekeeper.context"])
    from gatekeeper.gate import jobs as _gate_jobs  # noqa: F401  (registers kinds)
    from gatekeeper.register import jobs as _register_jobs  # noqa: F401


def runner(app: Flask) -> JobRunner:
    r: JobRunner = app.extensions["gatekeeper.jobs"]
    return r


__all__ = ["JobRunner", "job_kind", "job_view", "runner", "save_upload"]
