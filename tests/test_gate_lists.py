"""Campaign lists decided chunk by chunk, on both databases: the chunk size changes nothing in
the verdict file, repeats are decided once whichever chunk they fall in, and a file that
cannot be read to the end leaves no verdict file behind."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_gate_api import CAMPAIGN, EXPECTED, seed

from gatekeeper.errors import ValidationError
from gatekeeper.gate.campaigns import parse_campaign
from gatekeeper.gate.lists import decide_list

AS_OF = datetime(2026, 11, 22, 9, tzinfo=UTC)


def _decide(app: Flask, src: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    ctx = app.extensions["gatekeeper.context"]
    campaign, _ = parse_campaign(CAMPAIGN, AS_OF)
    with app.extensions["gatekeeper.db"].session_scope() as session:
        summary: dict[str, Any] = decide_list(session, ctx, campaign, AS_OF, src, out, **kwargs)
    return summary


def _write_list(path: Path) -> list[str]:
    # Every recipient three times, the later copies in other spellings and far apart, so
    # with small chunks a repeat lands in a later chunk than its first row.
    addresses = list(EXPECTED)
    spelled = addresses + [a.upper() for a in addresses] + [f"  {a}  " for a in addresses]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Email", "Note"])
        for i, a in enumerate(spelled):
            w.writerow([a, f"row {i}"])
            if i % 4 == 0:
                w.writerow([])  # a blank line is not a row
    return spelled


def test_the_chunk_size_changes_nothing_in_the_verdicts(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    seed(client, auth)
    src = tmp_path / "list.csv"
    _write_list(src)
    small = _decide(app, src, tmp_path / "small.csv", chunk=2)
    large = _decide(app, src, tmp_path / "large.csv")
    assert (tmp_path / "small.csv").read_bytes() == (tmp_path / "large.csv").read_bytes()
    assert small == large
    # "not an address" is invalid each time, so it is never a repeat; the others are.
    assert small["recipients"] == 3 * len(EXPECTED)
    assert small["duplicates"] == 2 * (len(EXPECTED) - 1)
    rows = list(csv.reader((tmp_path / "small.csv").read_text(encoding="utf-8-sig").splitlines()))
    assert rows[0] == ["Email", "Note", "decision", "reasons"]
    first = {r[0]: (r[2], r[3].split()[0]) for r in rows[1 : len(EXPECTED) + 1]}
    assert first == EXPECTED
    assert [r[0] for r in rows[len(EXPECTED) + 1 :]] == ["NOT AN ADDRESS", "  not an address  "]


def test_progress_is_reported_while_a_list_is_decided(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(client, auth)
    src = tmp_path / "list.csv"
    _write_list(src)
    monkeypatch.setattr("gatekeeper.gate.lists.PROGRESS_EVERY", 5)
    seen: list[int] = []
    _decide(app, src, tmp_path / "out.csv", chunk=3, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] <= 3 * len(EXPECTED)


def test_an_unreadable_row_fails_the_list_and_leaves_no_verdict_file(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    seed(client, auth)
    src = tmp_path / "list.csv"
    big = "x" * (csv.field_size_limit() + 1)
    src.write_text("email\n" + "anne@example.fr\n" * 5 + f'"{big}"\n' + "bob@example.fr\n")
    out = tmp_path / "verdicts.csv"
    with pytest.raises(ValidationError) as err:
        _decide(app, src, out, chunk=2)
    assert err.value.details == [{"row": 6, "problem": err.value.details[0]["problem"]}]
    assert "row 6" in str(err.value)
    assert not out.exists() and not out.with_suffix(".partial").exists()


def test_a_suppression_follows_the_contact_whichever_coordinate_names_it(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """eve@example.fr is suppressed: named by her id, her phone or her address, she is blocked;
    a suppressed address nobody registered is blocked for the suppression, not as unknown."""
    seed(client, auth)
    eve = {"external_id": "unsub", "phone": "06 11 22 33 44", "collected_at": "2025-06-10"}
    assert client.post("/api/v1/contacts", headers=auth, json={"contacts": [eve]}).status_code == 200
    stranger = {
        "email": "ghost@example.fr",
        "reason": "complaint",
        "channels": "all",
        "occurred_at": "2026-01-02",
    }
    res = client.post("/api/v1/suppressions", headers=auth, json={"entries": [stranger]})
    assert res.status_code == 200, res.json
    for channel, recipients in (
        ("email", [{"external_id": "unsub"}, "EVE@example.fr", "ghost@example.fr"]),
        ("sms", [{"external_id": "unsub"}, {"phone": "+33611223344"}]),
    ):
        res = client.post(
            "/api/v1/checks",
            headers=auth,
            json={
                "campaign": {**CAMPAIGN, "channel": channel},
                "as_of": "2026-11-22",
                "recipients": recipients,
            },
        )
        assert res.status_code == 200, res.json
        reasons = [v["reasons"][0] for v in res.json["verdicts"]]
        expected = ["suppressed.unsubscribe"] * 2 + (["suppressed.complaint"] if channel == "email" else [])
        assert reasons == expected, (channel, reasons)


def test_recipients_with_a_nul_character_are_invalid_addresses_not_errors(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    recipients = [
        {"external_id": "consented\x00"},
        "anne\x00@example.fr",
        {"phone": "06\x0012"},
        "anne@example.fr",
    ]
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": CAMPAIGN, "as_of": "2026-11-22", "recipients": recipients},
    )
    assert res.status_code == 200, res.json
    reasons = [v["reasons"][0] for v in res.json["verdicts"]]
    assert reasons == ["address.invalid"] * 3 + ["basis.consent"]


def test_the_api_keeps_writing_while_a_campaign_list_is_decided(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A list job reads for seconds at scale: on SQLite it must not hold the write lock meanwhile
    # (a contact added by the API in the middle of the decision is stored at once), and the run
    # is recorded afterwards in a writing session of its own.
    from gatekeeper.gate import lists
    from gatekeeper.gate.runs import latest_run, run_list

    monkeypatch.setattr(lists, "PROGRESS_EVERY", 1)  # progress (our hook) after every chunk
    seed(client, auth)
    cid = client.post("/api/v1/campaigns", headers=auth, json=CAMPAIGN).json["id"]
    src = tmp_path / "list.csv"
    _write_list(src)
    database = app.extensions["gatekeeper.db"]
    writes: list[int] = []

    def progress(_done: int) -> None:
        if not writes:  # one contact, from another connection, with almost no busy timeout
            with database.engine.connect() as other:
                if database.dialect == "sqlite":
                    other.exec_driver_sql("PRAGMA busy_timeout=200")
                res = other.exec_driver_sql(
                    "UPDATE contacts SET first_name = 'Écrit pendant la décision' WHERE id = 1"
                )
                writes.append(res.rowcount)
                other.commit()

    with database.session_scope(read_only=True) as session:
        summary = run_list(
            session,
            app.extensions["gatekeeper.context"],
            cid,
            AS_OF,
            src,
            progress,
            record=database.session_scope,
        )
    assert writes == [1]
    with database.session_scope(read_only=True) as session:
        run = latest_run(session, cid)
        assert run is not None and run.id == summary["run_id"]
