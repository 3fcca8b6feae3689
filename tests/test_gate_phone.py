"""Phone campaigns through the API: the shell counts attempts and finds the Bloctel scrub,
the core applies D223-9 and L223-1 (both databases)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

CALL = {
    "channel": "phone",
    "purpose": "commercial",
    "sender": "ACME SAS",
    "product_category": "coffee_capsules",
}


def check(client: FlaskClient, auth: dict[str, str], send_at: str, phone: str = "06 11 22 33 44") -> Any:
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": {**CALL, "send_at": send_at}, "recipients": [{"phone": phone}], "as_of": send_at},
    )
    assert res.status_code == 200, res.json
    return res.json["verdicts"][0]


def seed(client: FlaskClient, auth: dict[str, str], attempts: int) -> None:
    contact = {
        "external_id": "p1",
        "phone": "+33611223344",
        "collected_at": "2026-09-01",
        "collected_by": "ACME SAS",
        "timezone": "Europe/Paris",
    }
    assert client.post("/api/v1/contacts", headers=auth, json={"contacts": [contact]}).status_code == 200
    events = [
        {
            "contact": {"external_id": "p1"},
            "type": "consent",
            "channel": "phone",
            "given": True,
            "occurred_at": "2026-09-02",
            "sender": "ACME SAS",
            "method": "oral",
        }
    ]
    events += [
        {
            "contact": {"external_id": "p1"},
            "type": "call_attempt",
            "outcome": "no_answer",
            "occurred_at": f"2026-11-{10 + i:02d}T10:30:00+01:00",
        }
        for i in range(attempts)
    ]
    assert client.post("/api/v1/events", headers=auth, json={"events": events}).status_code == 200


def test_a_consented_call_in_hours_is_allowed_and_the_fifth_attempt_is_not(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    seed(client, auth, attempts=3)
    assert check(client, auth, "2026-11-24T10:30:00+01:00")["reasons"] == ["basis.consent"]
    client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "events": [
                {
                    "contact": {"external_id": "p1"},
                    "type": "call_attempt",
                    "occurred_at": "2026-11-20T11:00:00+01:00",
                }
            ]
        },
    )
    assert check(client, auth, "2026-11-24T10:30:00+01:00")["reasons"][0] == "phone.too_frequent"
    # Thirty days after the first attempts, the window has moved on.
    assert check(client, auth, "2026-12-15T10:30:00+01:00")["decision"] == "allow"


def test_calls_at_lunch_or_on_a_public_holiday_are_blocked(client: FlaskClient, auth: dict[str, str]) -> None:
    seed(client, auth, attempts=0)
    assert check(client, auth, "2026-11-24T13:30:00+01:00")["reasons"][0] == "phone.outside_hours"
    assert check(client, auth, "2026-11-11T10:30:00+01:00")["reasons"][0] == "phone.outside_hours"
    assert check(client, auth, "2026-11-24T14:00:00+01:00")["decision"] == "allow"


def test_before_august_2026_a_bloctel_listed_number_is_blocked(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    contact = {
        "external_id": "old",
        "phone": "+33699887766",
        "collected_at": "2025-01-10",
        "collected_by": "ACME SAS",
    }
    client.post("/api/v1/contacts", headers=auth, json={"contacts": [contact]})
    send = "2026-06-16T10:30:00+02:00"
    # Without a recent scrub the gate cannot show the number was not listed.
    assert check(client, auth, send, "06 99 88 77 66")["reasons"][0] == "bloctel.not_checked"
    res = client.post(
        "/api/v1/suppressions/bloctel?checked_at=2026-06-01",
        headers=auth,
        data="0699887766\n",
        content_type="text/plain",
    )
    assert res.status_code == 200
    assert check(client, auth, send, "06 99 88 77 66")["reasons"][0] == "suppressed.bloctel"
    # Since 2026-08-11 the same consumer needs consent instead.
    assert (
        check(client, auth, "2026-11-24T10:30:00+01:00", "06 99 88 77 66")["reasons"][0] == "consent.missing"
    )
