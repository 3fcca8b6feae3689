"""The rights of the person through the HTTP API, on both databases: access, rectification,
objection, erasure, and the auditor's reads of the legal archive."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from email.message import EmailMessage
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_proof_journal import PAUL, check_journal, live_a_life, post, sql

from gatekeeper.api.auth import create_api_key
from gatekeeper.models import Base, utcnow
from gatekeeper.proof import rights

CLEAR = ("paul", "martin", "example.fr", "612345678", "203.0.113", "crm-42", "rue de la paix", "firefox")


def everything_stored(app: Flask) -> str:
    """Every row of every table of the register, as one lower-case text."""
    with app.extensions["gatekeeper.db"].session_scope() as session:
        rows = [session.execute(text(f"SELECT * FROM {t.name}")).all() for t in Base.metadata.sorted_tables]
    return repr(rows).lower()


def key_with(app: Flask, *scopes: str) -> dict[str, str]:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        key = create_api_key(session, app.extensions["gatekeeper.context"].hasher, "scoped", scopes)
    return {"Authorization": f"Bearer {key}"}


def test_after_erasure_no_table_nor_journal_entry_holds_the_person_in_clear(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    assert "paul.martin@example.fr" in everything_stored(app)
    res = post(client, f"/api/v1/contacts/{cid}/erase", auth, {})
    assert res["already"] is False
    stored = everything_stored(app)
    for clear in CLEAR:
        assert clear not in stored, clear
    assert sql(app, "SELECT count(*) FROM journal_subjects")[0][0] == 0  # subject hashes now unlinkable
    report = check_journal(app)
    assert report.ok, report.problem
    assert report.facts_anonymised >= 3  # scrubbed events and the invoice moved out, all expected


def test_erasure_keeps_a_keyed_hash_suppression_on_every_channel_and_is_journaled(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    post(client, f"/api/v1/contacts/{cid}/erase", auth, {})
    rows = sql(app, "SELECT coord_kind, reason, channels FROM suppressions ORDER BY coord_kind")
    assert [tuple(r) for r in rows] == [("email", "erasure", "all"), ("phone", "erasure", "all")]
    kinds = [r[0] for r in sql(app, "SELECT kind FROM journal ORDER BY seq")]
    assert kinds[-3:] == ["suppression", "suppression", "anonymised"]
    # The address comes back in a CRM re-import: it stays blocked without a new consent.
    post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})
    check = post(
        client,
        "/api/v1/checks",
        auth,
        {
            "campaign": {"channel": "email", "purpose": "commercial", "sender": "ACME SAS"},
            "recipients": ["paul.martin@example.fr"],
        },
    )
    assert check["verdicts"][0]["decision"] == "block"


def test_erasing_twice_changes_nothing(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    cid = live_a_life(client, auth, app)
    post(client, f"/api/v1/contacts/{cid}/erase", auth, {})
    entries = sql(app, "SELECT count(*) FROM journal")[0][0]
    assert post(client, f"/api/v1/contacts/{cid}/erase", auth, {})["already"] is True
    assert sql(app, "SELECT count(*) FROM journal")[0][0] == entries


def test_the_invoice_moves_to_the_archive_that_only_an_auditor_reads_and_each_read_is_journaled(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    post(client, f"/api/v1/contacts/{cid}/erase", auth, {})
    writer = key_with(app, "register:read", "register:write")
    assert client.get("/api/v1/archive/records?purpose=tax", headers=writer).status_code == 403
    assert client.get("/api/v1/archive/records", headers=auth).status_code == 422
    res = client.get("/api/v1/archive/records?purpose=tax+inspection&kind=invoice", headers=auth)
    assert res.status_code == 200, res.json
    body: Any = res.json
    (invoice,) = body["records"]
    assert invoice["data"]["purchase"]["amount"] == 42.5
    assert invoice["data"]["customer"]["last_name"] == "Martin"  # the law wants the invoice complete
    assert sql(app, "SELECT kind FROM journal ORDER BY seq DESC LIMIT 1")[0][0] == "archive_read"
    assert check_journal(app).ok


def test_access_exports_everything_held_in_one_zip_and_is_journaled(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    res = client.get(f"/api/v1/contacts/{cid}/export", headers=auth)
    assert res.status_code == 200 and res.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(res.data))
    assert {"contact.json", "events.json", "evidence.json", "messages.json", "README.txt"} <= set(
        archive.namelist()
    )
    contact = json.loads(archive.read("contact.json"))
    assert (contact["email"], contact["last_name"]) == ("paul.martin@example.fr", "Martin")
    assert len(json.loads(archive.read("events.json"))) == 4
    assert sql(app, "SELECT kind FROM journal ORDER BY seq DESC LIMIT 1")[0][0] == "access_export"


def test_the_preference_centre_sends_the_access_export_to_the_persons_own_address(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    outgoing: list[EmailMessage] = []  # the SMTP edge of the process
    with app.extensions["gatekeeper.db"].session_scope() as session:
        rights.send_access_export(
            session,
            app.extensions["gatekeeper.context"],
            cid,
            utcnow(),
            sender="ACME SAS <privacy@acme.example>",
            send=outgoing.append,
        )
    (message,) = outgoing
    assert message["To"] == "paul.martin@example.fr"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/zip"


def test_rectification_updates_the_contact_and_journals_only_a_digest(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    res = client.patch(
        f"/api/v1/contacts/{cid}",
        json={"last_name": "Martín-Durand", "email": "P.MD@example.org"},
        headers=auth,
    )
    body: Any = res.json
    assert res.status_code == 200, body
    assert body["rectified"] == ["email", "last_name"]
    view: Any = client.get(f"/api/v1/contacts/{cid}", headers=auth).json
    assert (view["email"], view["last_name"]) == ("p.md@example.org", "Martín-Durand")
    assert "durand" not in repr(sql(app, "SELECT * FROM journal")).lower()
    assert sql(app, "SELECT kind FROM journal ORDER BY seq DESC LIMIT 1")[0][0] == "rectified"


def test_rectification_refuses_unknown_fields_and_taken_addresses(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    post(
        client,
        "/api/v1/contacts",
        auth,
        {"contacts": [{"email": "other@example.fr", "collected_at": "2025-01-01"}]},
    )
    res = client.patch(f"/api/v1/contacts/{cid}", json={"audience": "b2b"}, headers=auth)
    body: Any = res.json
    assert res.status_code == 422 and body["error"]["details"][0]["field"] == "audience"
    res = client.patch(f"/api/v1/contacts/{cid}", json={"email": "other@example.fr"}, headers=auth)
    assert res.status_code == 409


def test_an_objection_without_channels_covers_every_channel(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    res: Any = post(client, f"/api/v1/contacts/{cid}/objection", auth, {})
    assert res["channels"] == "all"
    rows = sql(app, "SELECT coord_kind, reason, channels FROM suppressions ORDER BY coord_kind")
    assert [tuple(r) for r in rows] == [("email", "unsubscribe", "all"), ("phone", "unsubscribe", "all")]
    kinds = [r[0] for r in sql(app, "SELECT kind FROM journal ORDER BY seq")]
    assert kinds[-3:] == ["suppression", "suppression", "objection"]
    assert check_journal(app).ok


def test_rights_on_an_unknown_contact_are_404(client: FlaskClient, auth: dict[str, str]) -> None:
    for method, path in (("get", "evidence"), ("get", "export"), ("post", "erase"), ("post", "objection")):
        assert getattr(client, method)(f"/api/v1/contacts/999/{path}", headers=auth).status_code == 404


def test_an_access_export_while_another_writer_commits_still_succeeds(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    # The export reads the person's data and journals itself. On SQLite a transaction that
    # read first cannot write after another connection committed in between ("database is
    # locked" at once): the export must take the write lock before it reads.
    cid = live_a_life(client, auth, app)
    database = app.extensions["gatekeeper.db"]
    holding, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with database.session_scope() as session:
            session.execute(text("UPDATE contacts SET first_name = first_name WHERE id = :c"), {"c": cid})
            holding.set()
            release.wait(timeout=30)

    writer = threading.Thread(target=other_writer)
    writer.start()
    assert holding.wait(timeout=30)
    threading.Timer(0.5, release.set).start()  # commits while the export waits or reads
    res = client.get(f"/api/v1/contacts/{cid}/export", headers=auth)
    writer.join(timeout=30)
    assert res.status_code == 200 and res.mimetype == "application/zip"
    assert sql(app, "SELECT kind FROM journal ORDER BY seq DESC LIMIT 1")[0][0] == "access_export"
