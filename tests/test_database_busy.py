"""A write that cannot get the database in time: another writer holds it (on SQLite, a long
import keeps the single write lock to its end; on PostgreSQL, a transaction holds the tables'
locks). The request changes nothing and says so with a 503 and Retry-After, never a 500: a page
in the person's language for the public links, the API's error shape for the API. Once the
other writer is done, the same request works. An unsubscribe is the exception: it is journaled
and answered as recorded (gatekeeper/links/unsubscribes.py). On SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from test_gate_api import CAMPAIGN
from test_links_helpers import PAUL, TODAY, add_contact, set_clock, signer, stored_events, suppressions
from test_links_pages import csrf_of

from gatekeeper.db import get_database, unavailable
from gatekeeper.spool import pending

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
SHORT_WAIT_MS = 200  # instead of the service's 30 s: how long a request waits for the writer


def wait_briefly(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's connections, and the requests' own shorter waits, give up on a held lock
    after SHORT_WAIT_MS."""
    monkeypatch.setattr("gatekeeper.db.REQUEST_WAIT_MS", SHORT_WAIT_MS)
    monkeypatch.setattr("gatekeeper.links.pages.UNSUBSCRIBE_WAIT_MS", SHORT_WAIT_MS)
    engine = get_database(app).engine

    @event.listens_for(engine, "connect")
    def _short(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute(f"PRAGMA busy_timeout={SHORT_WAIT_MS}")
        else:
            cur.execute(f"SET lock_timeout = {SHORT_WAIT_MS}")
            dbapi_conn.commit()
        cur.close()

    engine.dispose()  # connections already pooled were made without it


@contextmanager
def writer_busy(app: Flask, tables: str = "contacts, events, suppressions") -> Iterator[None]:
    """Another connection holds what a write needs, as an import in progress does (on
    PostgreSQL, these ``tables``; SQLite's one writer holds them all)."""
    database = get_database(app)
    if database.dialect == "sqlite":
        conn = sqlite3.connect(database.engine.url.database or "", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    url = database.engine.url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as pg:
        # EXCLUSIVE: others may still read these tables, but not write them.
        pg.execute(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
        yield
        pg.rollback()


def test_a_one_click_unsubscribe_while_the_writer_is_held_is_journaled_and_recorded_before_any_decision(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailbox provider's one-click POST is not known to be retried: answered 503, it would
    be lost. It is journaled (synced to disk) and answered as recorded; no decision is made
    without it (a check while it cannot be recorded is refused), and the first one after
    records it, with the proof of the moment it was asked."""
    monkeypatch.setattr("gatekeeper.links.unsubscribes.SETTLE_WAIT_SECONDS", 0.5)  # not 10 s
    clock = set_clock(app, TODAY)
    paul = add_contact(client, auth)
    path = f"/u/{signer(app).unsubscribe(paul, 7)}"
    check = {"campaign": CAMPAIGN, "recipients": [PAUL["email"]], "as_of": "2026-11-22T12:00:00Z"}
    before = client.post("/api/v1/checks", json=check, headers=auth).get_json()["verdicts"][0]
    assert "suppressed.unsubscribe" not in before["reasons"]
    wait_briefly(app, monkeypatch)
    with writer_busy(app):
        done = client.post(
            path,
            data=ONE_CLICK,
            headers={"Accept-Language": "fr", "User-Agent": "Mailbox one-click"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
        assert done.status_code == 200
        assert "Vous êtes désinscrit(e)" in done.get_data(as_text=True)
        assert "Content-Security-Policy" in done.headers  # still a public page
        assert pending(spool_root(app), "unsubscribes") > 0
        refused = client.post("/api/v1/checks", json=check, headers=auth)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "60"
        assert refused.get_json()["error"]["code"] == "unavailable"
        assert "unsubscribes" in refused.get_json()["error"]["message"]
    assert stored_events(app, paul, "opposition") == [] and suppressions(app) == []
    clock.now = TODAY + timedelta(hours=1)  # recorded later, as asked at the time of the POST
    after = client.post("/api/v1/checks", json=check, headers=auth)
    assert after.status_code == 200
    assert "suppressed.unsubscribe" in after.get_json()["verdicts"][0]["reasons"]
    assert pending(spool_root(app), "unsubscribes") == 0
    [objection] = stored_events(app, paul, "opposition")
    assert objection["occurred_at"] == "2026-11-22T10:00:00Z"
    assert (objection["ip"], objection["user_agent"]) == ("203.0.113.9", "Mailbox one-click")
    assert (objection["form_id"], objection["one_click"], objection["campaign_id"]) == (
        "gatekeeper.one_click",
        True,
        7,
    )
    assert objection["channels"] == ["email"] and objection["origin"] == "link"
    again = client.post(path, data=ONE_CLICK)
    assert again.status_code == 200 and "déjà désinscrit" in again.get_data(as_text=True)
    assert len(stored_events(app, paul, "opposition")) == 1


def test_an_unsubscribe_waits_a_few_seconds_for_the_writer_not_the_busy_timeout(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the service's own timeouts (SQLite's 30 s busy timeout, PostgreSQL's endless lock
    wait), an unsubscribe POST gives up on a held writer after UNSUBSCRIBE_WAIT_MS and is
    journaled: a mailbox provider is not known to wait, and gunicorn kills a worker after 30 s."""
    monkeypatch.setattr("gatekeeper.links.pages.UNSUBSCRIBE_WAIT_MS", 300)
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    path = f"/u/{signer(app).unsubscribe(paul, 7)}"
    answers: list[int] = []
    with writer_busy(app):
        poster = threading.Thread(
            target=lambda: answers.append(client.post(path, data=ONE_CLICK).status_code)
        )
        poster.start()
        poster.join(timeout=20)  # the service's own timeout would be 30 s (SQLite) or none
        assert not poster.is_alive(), "the unsubscribe waited for the writer"
    assert answers == [200]
    assert pending(spool_root(app), "unsubscribes") > 0
    assert stored_events(app, paul, "opposition") == []
    with get_database(app).engine.connect() as conn:  # the pool's connections keep their own
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000


def test_another_public_form_while_the_writer_is_held_gets_a_busy_page_and_works_once_it_is_free(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the unsubscribe is journaled: a preference centre's choices are a person at a
    page, who is told nothing was recorded and to use the same link again."""
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    path = f"/p/{signer(app).preferences(paul, 7)}"
    token = csrf_of(client.get(path))
    choices = {"csrf_token": token, "sms": "no"}
    wait_briefly(app, monkeypatch)
    with writer_busy(app):
        busy = client.post(path, data=choices, headers={"Accept-Language": "fr"})
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "60"
        page = busy.get_data(as_text=True)
        assert "Service momentanément occupé" in page and "même lien" in page
        assert "Content-Security-Policy" in busy.headers  # still a public page
        english = client.post(f"{path}?lang=en", data=choices)
        assert english.status_code == 503 and "Service briefly busy" in english.get_data(as_text=True)
    assert stored_events(app, paul, "opposition") == [] and suppressions(app) == []
    assert pending(spool_root(app), "unsubscribes") == 0
    done = client.post(path, data=choices)
    assert done.status_code == 200
    assert len(stored_events(app, paul, "opposition")) == 1


def test_an_api_write_while_the_writer_is_held_gets_503_in_the_api_error_shape(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"contacts": [PAUL]}
    wait_briefly(app, monkeypatch)
    with writer_busy(app):
        busy = client.post("/api/v1/contacts", json=body, headers=auth)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "60"
        assert busy.get_json()["error"]["code"] == "unavailable"
    assert contacts(app) == 0  # nothing stored
    created = client.post("/api/v1/contacts", json=body, headers=auth)
    assert created.status_code == 200, created.get_json()
    assert contacts(app) == 1


def test_a_request_held_up_by_a_writer_answers_503_before_its_worker_would_be_killed(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the service's own timeouts (SQLite's 30 s busy timeout, PostgreSQL's endless lock
    wait, gunicorn's 30 s worker timeout), a request's write gives up after REQUEST_WAIT_MS
    and answers 503: waiting longer, its worker would be killed with no answer at all."""
    monkeypatch.setattr("gatekeeper.db.REQUEST_WAIT_MS", 300)
    answers: list[int] = []

    def post() -> None:
        answers.append(client.post("/api/v1/contacts", json={"contacts": [PAUL]}, headers=auth).status_code)

    with writer_busy(app):
        poster = threading.Thread(target=post)
        poster.start()
        poster.join(timeout=20)  # the service's own timeout would be 30 s (SQLite) or none
        assert not poster.is_alive(), "the request waited for the writer"
    assert answers == [503]
    assert contacts(app) == 0
    with get_database(app).engine.connect() as conn:  # the pool's connections keep their own
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
    assert client.post("/api/v1/contacts", json={"contacts": [PAUL]}, headers=auth).status_code == 200


def test_a_list_job_that_starts_while_the_writer_is_held_waits_for_it_and_ends_done(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job runs in the background: its own state (running, done) and its run's record wait
    for a busy database instead of failing, which left the job "queued" for ever."""
    set_clock(app, TODAY)
    add_contact(client, auth)
    cid = client.post("/api/v1/campaigns", headers=auth, json=CAMPAIGN).json["id"]
    listing = tmp_path / "list.csv"
    listing.write_text(f"email\n{PAUL['email']}\n")
    runner, database = app.extensions["gatekeeper.jobs"], get_database(app)
    params = {"campaign_id": cid, "path": str(listing), "as_of": "2026-11-22T12:00:00Z"}
    with database.session_scope() as session:
        job_id = runner.submit(session, "campaign_list", params).id
    wait_briefly(app, monkeypatch)
    held, freed = threading.Event(), threading.Event()

    def hold_for_a_while() -> None:
        with writer_busy(app, "jobs, verdict_runs, verdict_items"):
            held.set()
            time.sleep(1.5)
        freed.set()

    holder = threading.Thread(target=hold_for_a_while)
    holder.start()
    try:
        assert held.wait(10)
        runner.start(job_id)
        runner.wait(job_id, timeout=60)
    finally:
        holder.join()
    assert freed.is_set()
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json
    assert job["state"] == "done", job
    assert job["result"]["recipients"] == 1


def spool_root(app: Flask) -> Path:
    return Path(app.extensions["gatekeeper.settings"].spool_dir)


def contacts(app: Flask) -> int:
    with get_database(app).engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM contacts")).scalar_one())


@pytest.mark.parametrize(
    ("orig", "busy"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database table is locked: contacts"), True),
        (sqlite3.OperationalError("no such table: contacts"), False),  # our mistake: stays a 500
        (sqlite3.OperationalError('near "SELEC": syntax error'), False),
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), True),
        (psycopg.OperationalError("connection refused"), True),
    ],
)
def test_only_a_busy_or_unreachable_database_is_answered_as_unavailable(orig: Exception, busy: bool) -> None:
    assert unavailable(OperationalError("SELECT 1", {}, orig)) is busy
