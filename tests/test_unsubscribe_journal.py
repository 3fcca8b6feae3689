"""Unsubscribes journaled while the database was busy (gatekeeper/links/unsubscribes.py): the
drainer records each once, with the proof of the moment it was asked, nothing for a person
erased meanwhile; a campaign list and the reconsent mailer record them before they read the
register. The POST side is in test_database_busy.py. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import TEST_SECRET
from flask import Flask
from flask.testing import FlaskClient
from test_database_busy import ONE_CLICK, wait_briefly, writer_busy
from test_gate_api import CAMPAIGN, wait_job
from test_links_helpers import PAUL, TODAY, add_contact, erase, set_clock, signer, stored_events
from test_retention_helpers import Mailbox, add_person, collected_for, pauls

from gatekeeper.errors import UnavailableError
from gatekeeper.links.records import Proof
from gatekeeper.links.unsubscribes import handler, parse_unsubscribe, settle, unsubscribe_line
from gatekeeper.models import utcnow
from gatekeeper.retention.tasks import TaskEnv, run_task
from gatekeeper.spool import STREAMS, Spool, SpoolRecord, drain_all, pending


def evidence(form: str = "one_click", campaign: int | str | None = 7) -> Proof:
    return Proof(
        occurred_at=TODAY,
        ip="198.51.100.4",
        user_agent="Mozilla/5.0 « test »",
        url="http://localhost:5000/u/",
        form_id=f"gatekeeper.{form}",
        text_version=f"{form}.v1.fr",
        sender="ACME SAS",
        campaign_id=campaign,
    )


def journal(app: Flask, *lines: bytes) -> None:
    spool = Spool(Path(app.extensions["gatekeeper.settings"].spool_dir), "unsubscribes", fsync=True)
    for line in lines:
        spool.append(line)
    spool.close()


def test_a_line_reads_back_every_field_it_was_written_with() -> None:
    for proof in (evidence(), evidence("unsubscribe_page", "spring-24"), evidence(campaign=None)):
        line = unsubscribe_line(42, "sms", proof, one_click=proof.form_id.endswith("one_click"))
        assert b"\n" not in line
        read = parse_unsubscribe(line)
        assert (read.contact_id, read.channel, read.proof) == (42, "sms", proof)
        assert read.one_click is proof.form_id.endswith("one_click")


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"v":2,"c":1,"ch":"email","oc":true,"p":{}}',
        b'{"v":1,"c":"1","ch":"email","oc":true,"p":{}}',
        b'{"v":1,"c":1,"ch":"pigeon","oc":true,"p":{"occurred_at":"2026-11-22T10:00:00Z",'
        b'"url":"u","form_id":"f","text_version":"t","sender":"s"}}',
        b'{"v":1,"c":1,"ch":"email","oc":true,"p":{"occurred_at":"yesterday",'
        b'"url":"u","form_id":"f","text_version":"t","sender":"s"}}',
    ],
)
def test_a_line_this_version_did_not_write_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_unsubscribe(line)


def test_the_drainer_records_each_unsubscribe_once_and_nothing_for_an_erased_person(
    app: Flask, client: FlaskClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    anne = add_contact(client, auth, external_id="crm-43", email="anne@example.fr", phone=None)
    erase(app, anne)
    paul_line = unsubscribe_line(paul, "email", evidence(), one_click=True)
    journal(
        app,
        paul_line,
        b"{broken",
        unsubscribe_line(paul, "email", evidence("unsubscribe_page"), one_click=False),  # "already"
        unsubscribe_line(anne, "email", evidence(), one_click=True),
    )
    assert next(iter(STREAMS)) == "unsubscribes"  # first in every pass
    settings, database = app.extensions["gatekeeper.settings"], app.extensions["gatekeeper.db"]
    with caplog.at_level(logging.ERROR):
        counts = drain_all(settings, database)
    assert counts["unsubscribes"] == 4
    assert "is not an unsubscribe" in caplog.text
    [objection] = stored_events(app, paul, "opposition")
    assert (
        objection["form_id"] == "gatekeeper.one_click" and objection["occurred_at"] == "2026-11-22T10:00:00Z"
    )
    assert stored_events(app, anne, "opposition") == []
    # A batch handed again (a drainer that crashed before saving its progress) stores nothing.
    handle = handler(settings, database)
    handle([SpoolRecord("again:0", paul_line)])
    assert len(stored_events(app, paul, "opposition")) == 1


def test_a_campaign_list_records_the_journaled_unsubscribes_before_it_is_decided(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    wait_briefly(app, monkeypatch)
    with writer_busy(app):
        done = client.post(f"/u/{signer(app).unsubscribe(paul, 7)}", data=ONE_CLICK)
        assert done.status_code == 200
    cid = client.post("/api/v1/campaigns", headers=auth, json=CAMPAIGN).json["id"]
    res = client.post(
        f"/api/v1/campaigns/{cid}/lists?as_of=2026-11-22T12:00:00Z",
        headers=auth,
        data=f"email\n{PAUL['email']}\n".encode(),
        content_type="text/csv",
    )
    job = wait_job(app, client, auth, res.json["id"])
    assert job["state"] == "done", job
    verdicts = client.get(f"/api/v1/campaigns/{cid}/verdicts.csv", headers=auth).get_data(as_text=True)
    assert "suppressed.unsubscribe" in verdicts.splitlines()[1]
    assert len(stored_events(app, paul, "opposition")) == 1


def test_the_reconsent_mailer_writes_to_nobody_whose_unsubscribe_is_journaled(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    now = utcnow()
    people = [p | {"collected_at": collected_for(timedelta(days=29), now)} for p in pauls(2)]
    first, second = (add_person(client, auth, p) for p in people)
    journal(app, unsubscribe_line(first, "email", evidence(), one_click=True))
    database = app.extensions["gatekeeper.db"]
    run_task(database, env, "plan_reconsent", now)
    run_task(database, env, "send_outbox", now)
    assert [str(m["To"]) for m in mailbox.sent] == [people[1]["email"]]
    assert len(stored_events(app, first, "opposition")) == 1 and second
    assert pending(Path(env.settings.spool_dir), "unsubscribes") == 0


def test_the_check_command_decides_a_list_with_a_summary_and_records_journaled_unsubscribes_first(
    app: Flask, client: FlaskClient, auth: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """``gatekeeper check``: the verdict file (every input row, decision and reasons appended),
    the summary by reason, and the journaled unsubscribe recorded before the list is read."""
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    journal(app, unsubscribe_line(paul, "email", evidence(), one_click=True))
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[campaign]\n" + "".join(f'{k} = "{v}"\n' for k, v in CAMPAIGN.items()))
    listing = tmp_path / "list.csv"
    listing.write_text(f"email,first_name\n{PAUL['email']},Paul\nstranger@example.fr,Zoé\nnot-an-address,X\n")
    out = tmp_path / "verdicts.csv"
    settings = app.extensions["gatekeeper.settings"]
    env = {
        **os.environ,
        "GATEKEEPER_ENV": "test",
        "GATEKEEPER_DATABASE_URL": db_url,
        "GATEKEEPER_SECRET_KEY": TEST_SECRET,
        "GATEKEEPER_SPOOL_DIR": settings.spool_dir,
    }
    args = [
        "check",
        "--campaign",
        str(campaign),
        str(listing),
        "-o",
        str(out),
        "--as-of",
        "2026-11-22T12:00:00Z",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "gatekeeper.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 recipients, 0 allowed, 3 blocked" in done.stdout
    assert "suppressed.unsubscribe" in done.stdout and "address.invalid" in done.stdout
    rows = out.read_text(encoding="utf-8-sig").splitlines()  # a BOM: Excel reads it as UTF-8
    assert rows[0] == "email,first_name,decision,reasons"
    assert rows[1].startswith(f"{PAUL['email']},Paul,block,") and "suppressed.unsubscribe" in rows[1]
    assert rows[2].startswith("stranger@example.fr,Zoé,block,contact.unknown")
    assert rows[3].startswith("not-an-address,X,block,address.invalid")
    assert len(stored_events(app, paul, "opposition")) == 1


def test_settling_waits_for_a_busy_database_within_its_limit_then_refuses(
    app: Flask, client: FlaskClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list job may wait for a long import to end; a caller that cannot wait is refused, and
    nothing is lost: the line stays journaled for the next try."""
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    journal(app, unsubscribe_line(paul, "email", evidence(), one_click=True))
    settings, database = app.extensions["gatekeeper.settings"], app.extensions["gatekeeper.db"]
    wait_briefly(app, monkeypatch)
    with writer_busy(app), pytest.raises(UnavailableError, match="not recorded yet"):
        settle(settings, database, wait=0.3)
    assert stored_events(app, paul, "opposition") == []
    freed = threading.Event()

    def hold_then_free() -> None:
        with writer_busy(app):
            held.set()
            time.sleep(0.8)
        freed.set()

    held = threading.Event()
    holder = threading.Thread(target=hold_then_free)
    holder.start()
    held.wait(5)
    try:
        assert settle(settings, database, wait=10) == 1
    finally:
        holder.join()
    assert freed.is_set()
    assert len(stored_events(app, paul, "opposition")) == 1


def test_settling_waits_no_longer_than_its_limit_whatever_the_databases_own_timeouts(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """A check settles within SETTLE_WAIT_SECONDS (under gunicorn's 30 s worker timeout), not
    SQLite's 30 s busy timeout or PostgreSQL's endless lock wait."""
    set_clock(app, TODAY)
    paul = add_contact(client, auth)
    journal(app, unsubscribe_line(paul, "email", evidence(), one_click=True))
    settings, database = app.extensions["gatekeeper.settings"], app.extensions["gatekeeper.db"]
    outcome: list[BaseException] = []

    def settling() -> None:
        try:
            settle(settings, database, wait=0.3)
        except UnavailableError as exc:
            outcome.append(exc)

    with writer_busy(app):
        worker = threading.Thread(target=settling)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "settling waited for the database's own timeout"
    assert len(outcome) == 1
    assert stored_events(app, paul, "opposition") == []
    assert settle(settings, database) == 1
    assert len(stored_events(app, paul, "opposition")) == 1
