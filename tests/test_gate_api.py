"""The gate through its HTTP interface, on both databases: checks and campaign lists."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

CAMPAIGN = {
    "channel": "email",
    "purpose": "commercial",
    "sender": "ACME SAS",
    "product_category": "coffee_capsules",
    "send_at": "2026-11-24T11:00:00+01:00",
}


def seed(client: FlaskClient, auth: dict[str, str]) -> None:
    contacts = [
        {
            "external_id": "consented",
            "email": "anne@example.fr",
            "collected_at": "2025-06-10",
            "collected_by": "ACME SAS",
        },
        {
            "external_id": "client",
            "email": "bob@example.fr",
            "collected_at": "2025-06-10",
            "collected_by": "ACME SAS",
        },
        {
            "external_id": "nothing",
            "email": "carl@example.fr",
            "collected_at": "2025-06-10",
            "collected_by": "ACME SAS",
        },
        {
            "external_id": "old",
            "email": "dora@example.fr",
            "collected_at": "2022-01-10",
            "collected_by": "ACME SAS",
        },
        {
            "external_id": "unsub",
            "email": "eve@example.fr",
            "collected_at": "2025-06-10",
            "collected_by": "ACME SAS",
        },
    ]
    assert client.post("/api/v1/contacts", json={"contacts": contacts}, headers=auth).status_code == 200
    events = [
        {
            "contact": {"external_id": "consented"},
            "type": "consent",
            "channel": "email",
            "given": True,
            "occurred_at": "2025-06-10",
            "method": "checkbox",
            "sender": "ACME SAS",
        },
        {
            "contact": {"external_id": "client"},
            "type": "purchase",
            "occurred_at": "2025-07-01",
            "product_category": "coffee_machines",
            "seller": "ACME SAS",
        },
        {
            "contact": {"external_id": "unsub"},
            "type": "consent",
            "channel": "email",
            "given": True,
            "occurred_at": "2025-06-10",
            "sender": "ACME SAS",
        },
    ]
    res = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert res.status_code == 200, res.json
    res = client.post(
        "/api/v1/suppressions",
        headers=auth,
        json={
            "entries": [
                {
                    "email": "eve@example.fr",
                    "reason": "unsubscribe",
                    "channels": "all",
                    "occurred_at": "2026-01-01",
                }
            ]
        },
    )
    assert res.status_code == 200


EXPECTED = {
    "anne@example.fr": ("allow", "basis.consent"),
    "bob@example.fr": ("allow", "basis.soft_opt_in"),
    "carl@example.fr": ("block", "consent.missing"),
    "dora@example.fr": ("block", "retention.expired"),
    "eve@example.fr": ("block", "suppressed.unsubscribe"),
    "stranger@example.fr": ("block", "contact.unknown"),
    "not an address": ("block", "address.invalid"),
}


def test_a_check_decides_every_recipient_in_the_order_sent(client: FlaskClient, auth: dict[str, str]) -> None:
    seed(client, auth)
    recipients = [*EXPECTED, "Anne@Example.fr"]
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": CAMPAIGN, "recipients": recipients, "as_of": "2026-11-22T10:00:00+01:00"},
    )
    assert res.status_code == 200, res.json
    body = res.json
    assert body["policy"]["id"] == "fr-2026" and body["policy"]["version"]
    got = [(v["recipient"], v["decision"], v["reasons"][0]) for v in body["verdicts"]]
    assert got == [(r, *EXPECTED[r]) for r in EXPECTED] + [("Anne@Example.fr", "allow", "basis.consent")]
    assert body["summary"]["allowed"] == 2 and body["summary"]["blocked"] == 5
    assert body["summary"]["duplicates"] == 1
    anne = body["verdicts"][0]
    assert anne["basis"] == "consent" and anne["retention"]["state"] == "active"
    assert body["verdicts"][5]["contact_id"] is None


def test_an_unsubscribe_blocks_at_once_and_a_newer_consent_lifts_it(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    check = {"campaign": CAMPAIGN, "recipients": ["eve@example.fr"], "as_of": "2026-11-22"}
    assert client.post("/api/v1/checks", headers=auth, json=check).json["verdicts"][0]["decision"] == "block"
    client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "events": [
                {
                    "contact": {"email": "eve@example.fr"},
                    "type": "consent",
                    "channel": "email",
                    "given": True,
                    "occurred_at": "2026-02-01",
                    "sender": "ACME SAS",
                    "method": "double_opt_in",
                }
            ]
        },
    )
    assert client.post("/api/v1/checks", headers=auth, json=check).json["verdicts"][0]["reasons"] == [
        "basis.consent"
    ]


def test_a_check_for_a_stored_campaign_gives_allowed_recipients_signed_links_and_headers(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    cid = client.post("/api/v1/campaigns", headers=auth, json=CAMPAIGN).json["id"]
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={
            "campaign": CAMPAIGN,
            "campaign_id": cid,
            "recipients": ["anne@example.fr", "carl@example.fr"],
            "as_of": "2026-11-22",
        },
    )
    anne, carl = res.json["verdicts"]
    assert anne["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert anne["headers"]["List-Unsubscribe"] == f"<{anne['links']['unsubscribe']}>"
    assert "anne" not in anne["links"]["unsubscribe"]  # ids only in the token
    assert client.get(anne["links"]["preferences"].removeprefix("http://127.0.0.1:8000")).status_code == 200
    assert "links" not in carl and "headers" not in carl
    unknown = client.post(
        "/api/v1/checks", headers=auth, json={"campaign": CAMPAIGN, "campaign_id": 999, "recipients": []}
    )
    assert unknown.status_code == 404


def test_every_verdict_about_a_person_is_in_their_evidence_pack(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    client.post(
        "/api/v1/checks",
        headers=auth,
        json={
            "campaign": CAMPAIGN,
            "recipients": ["carl@example.fr", "stranger@example.fr"],
            "as_of": "2026-11-22",
        },
    )
    cid = client.post("/api/v1/campaigns", headers=auth, json=CAMPAIGN).json["id"]
    res = client.post(
        f"/api/v1/campaigns/{cid}/lists?as_of=2026-11-23",
        headers=auth,
        data=b"email\ncarl@example.fr\n",
        content_type="text/csv",
    )
    assert wait_job(app, client, auth, res.json["id"])["state"] == "done"
    carl = client.post(
        "/api/v1/contacts",
        headers=auth,
        json={"contacts": [{"external_id": "nothing", "collected_at": "2025-06-10"}]},
    ).json["contacts"][0]["id"]
    pack = client.get(f"/api/v1/contacts/{carl}/evidence", headers=auth).json
    got = [(v["kind"], v["campaign_id"], v["decision"], v["reasons"][0]) for v in pack["verdicts"]]
    assert got == [("check", None, "block", "consent.missing"), ("list", cid, "block", "consent.missing")]
    assert all(v["policy"]["id"] == "fr-2026" and v["journal"] for v in pack["verdicts"])
    html = client.get(f"/api/v1/contacts/{carl}/evidence?format=html", headers=auth).get_data(as_text=True)
    assert "Verdicts given about this person" in html and "consent.missing" in html


def test_recipients_named_by_email_phone_or_external_id_in_one_check_find_their_contacts(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    extra = {"external_id": "consented", "phone": "06 55 44 33 22", "collected_at": "2025-06-10"}
    assert client.post("/api/v1/contacts", headers=auth, json={"contacts": [extra]}).status_code == 200
    recipients = [
        {"external_id": "consented"},
        "bob@example.fr",
        {"phone": "+33655443322"},
        {"external_id": "x"},
    ]
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": CAMPAIGN, "as_of": "2026-11-22", "recipients": recipients},
    )
    got = [(v["contact_id"] is not None, v["reasons"][0]) for v in res.json["verdicts"]]
    # A phone number cannot receive an e-mail: its coordinate is invalid for the channel.
    assert got == [
        (True, "basis.consent"),
        (True, "basis.soft_opt_in"),
        (True, "address.invalid"),
        (False, "contact.unknown"),
    ]
    sms = client.post(
        "/api/v1/checks",
        headers=auth,
        json={
            "campaign": {**CAMPAIGN, "channel": "sms"},
            "as_of": "2026-11-22",
            "recipients": [{"external_id": "nothing"}],
        },
    )
    assert sms.json["verdicts"][0]["reasons"][0] == "address.invalid"  # no phone on record


def test_bad_campaigns_get_named_errors(client: FlaskClient, auth: dict[str, str]) -> None:
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={
            "campaign": {**CAMPAIGN, "channel": "pigeon", "send_at": "tomorrow"},
            "recipients": [],
        },
    )
    assert res.status_code == 422
    fields = {d["field"] for d in res.json["error"]["details"]}
    assert {"campaign.channel", "campaign.send_at"} <= fields


def wait_job(app: Flask, client: FlaskClient, auth: dict[str, str], job_id: int) -> dict[str, Any]:
    app.extensions["gatekeeper.jobs"].wait(job_id)
    for _ in range(50):
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_a_campaign_list_is_decided_as_a_job_and_streamed_back(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth)
    cid = client.post("/api/v1/campaigns", headers=auth, json={**CAMPAIGN, "name": "Noël"}).json["id"]
    body = "email;first_name;note\n" + "".join(f"{r};X;=cmd()\n" for r in EXPECTED) + "anne@example.fr;dup;\n"
    res = client.post(
        f"/api/v1/campaigns/{cid}/lists?as_of=2026-11-22",
        headers=auth,
        data=body.encode("cp1252", errors="replace"),
        content_type="text/csv",
    )
    assert res.status_code == 202, res.json
    job = wait_job(app, client, auth, res.json["id"])
    assert job["state"] == "done", job
    assert job["result"]["allowed"] == 2 and job["result"]["duplicates"] == 1
    view = client.get(f"/api/v1/campaigns/{cid}", headers=auth).json
    assert view["run"]["policy"]["id"] == "fr-2026"
    assert view["run"]["summary"]["by_reason"]["contact.unknown"] == 1
    out = client.get(f"/api/v1/campaigns/{cid}/verdicts.csv?decision=block", headers=auth)
    assert out.status_code == 200
    rows = list(csv.reader(io.StringIO(out.get_data(as_text=True).lstrip("\ufeff")), delimiter=";"))
    assert rows[0] == [
        "email",
        "first_name",
        "note",
        "decision",
        "reasons",
        "unsubscribe_url",
        "preferences_url",
    ]
    assert {r[0] for r in rows[1:]} == {r for r, (d, _) in EXPECTED.items() if d == "block"}
    assert all(r[2] == "'=cmd()" for r in rows[1:])  # formula neutralised
    assert all(r[3] == "block" and r[5] == "" for r in rows[1:])
    allowed = client.get(f"/api/v1/campaigns/{cid}/verdicts.csv?decision=allow", headers=auth)
    arows = list(csv.reader(io.StringIO(allowed.get_data(as_text=True).lstrip("\ufeff")), delimiter=";"))
    anne = next(r for r in arows if r[0] == "anne@example.fr")
    assert anne[5].startswith("http://127.0.0.1:8000/u/") and anne[6].startswith("http://127.0.0.1:8000/p/")
    # The link in the file works: a one-click POST unsubscribes, and the gate blocks at once.
    path = anne[5].removeprefix("http://127.0.0.1:8000")
    res = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert res.status_code == 200
    check = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": CAMPAIGN, "recipients": ["anne@example.fr"], "as_of": "2026-11-24"},
    )
    assert check.json["verdicts"][0]["reasons"][0] == "suppressed.unsubscribe"


def test_a_list_without_the_channel_column_fails_with_a_clear_error(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = client.post("/api/v1/campaigns", headers=auth, json={**CAMPAIGN, "channel": "sms"}).json["id"]
    res = client.post(
        f"/api/v1/campaigns/{cid}/lists",
        headers=auth,
        data=b"email\na@example.fr\n",
        content_type="text/csv",
    )
    job = wait_job(app, client, auth, res.json["id"])
    assert job["state"] == "failed"
    assert "needs a 'phone' column" in job["result"]["message"]
    assert client.get(f"/api/v1/campaigns/{cid}/verdicts.csv", headers=auth).status_code == 422
