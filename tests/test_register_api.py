"""The register through its HTTP interface: responses and stored state, on both databases."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient


def post(client: FlaskClient, path: str, auth: dict[str, str], body: Any) -> Any:
    return client.post(path, json=body, headers=auth)


PAUL = {
    "external_id": "crm-42",
    "email": "Paul.Martin@Example.fr",
    "phone": "06 12 34 56 78",
    "first_name": "Paul",
    "last_name": "Martin",
    "audience": "b2c",
    "collected_at": "2025-06-10",
    "collected_by": "ACME SAS",
    "source": {"type": "direct", "name": "checkout", "proof_ref": "form-v3"},
    "postal_address": {
        "line1": "1 rue de la Paix",
        "postcode": "69001",
        "city": "Lyon",
        "country": "FR",
    },
    "purpose": "marketing",
    "timezone": "Europe/Paris",
    "attributes": {"birth_year": 1980},
}


def test_a_contact_round_trip_normalises_coordinates_and_computes_its_deadline(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    res = post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})
    assert res.status_code == 200, res.json
    assert res.json["created"] == 1
    cid = res.json["contacts"][0]["id"]
    view = client.get(f"/api/v1/contacts/{cid}?as_of=2026-11-22", headers=auth).json
    assert view["email"] == "paul.martin@example.fr"
    assert view["phone"] == "+33612345678"
    assert view["retention"]["clock"] == "prospect"
    assert view["retention"]["state"] == "active"
    # collected 2025-06-10 00:00 Paris = 2025-06-09T22:00Z, kept three years
    assert view["retention"]["deadline"] == "2028-06-09T22:00:00Z"


def test_the_same_contacts_twice_change_nothing(client: FlaskClient, auth: dict[str, str]) -> None:
    post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})
    again = post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]}).json
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 1)


def test_a_click_restarts_the_clock_and_an_open_does_not(client: FlaskClient, auth: dict[str, str]) -> None:
    cid = post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]}).json["contacts"][0]["id"]
    ref = {"external_id": "crm-42"}
    post(
        client,
        "/api/v1/events",
        auth,
        {"events": [{"contact": ref, "type": "open", "occurred_at": "2026-01-05T10:00:00Z"}]},
    )
    view = client.get(f"/api/v1/contacts/{cid}", headers=auth).json
    assert view["retention"]["deadline"] == "2028-06-09T22:00:00Z"
    res = post(
        client,
        "/api/v1/events",
        auth,
        {
            "events": [
                {
                    "contact": ref,
                    "type": "interest",
                    "kind": "click",
                    "occurred_at": "2026-02-01T10:00:00Z",
                }
            ]
        },
    )
    assert res.status_code == 200, res.json
    view = client.get(f"/api/v1/contacts/{cid}", headers=auth).json
    assert view["retention"]["deadline"] == "2029-02-01T10:00:00Z"
    assert view["retention"]["started_by"]["kind"].startswith("interest")
    # An older click arriving late never moves the clock backwards.
    post(
        client,
        "/api/v1/events",
        auth,
        {
            "events": [
                {
                    "contact": ref,
                    "type": "interest",
                    "kind": "click",
                    "occurred_at": "2025-12-01T10:00:00Z",
                }
            ]
        },
    )
    view = client.get(f"/api/v1/contacts/{cid}", headers=auth).json
    assert view["retention"]["deadline"] == "2029-02-01T10:00:00Z"


def test_bad_items_are_refused_whole_with_index_and_field(client: FlaskClient, auth: dict[str, str]) -> None:
    bad = [
        PAUL,
        {"email": "not-an-email", "collected_at": "2025-02-30"},
        {"email": "x@example.fr", "collected_at": "2025-01-01", "audience": "martian"},
    ]
    res = post(client, "/api/v1/contacts", auth, {"contacts": bad})
    assert res.status_code == 422
    details = res.json["error"]["details"]
    assert {k: details[0][k] for k in ("index", "field")} == {"index": 1, "field": "email"}
    assert any(d["index"] == 1 and d["field"] == "collected_at" for d in details)
    assert any(d["index"] == 2 and d["field"] == "audience" for d in details)
    assert client.get("/api/v1/contacts/1", headers=auth).status_code == 404


def test_unknown_event_types_and_contacts_get_named_errors(client: FlaskClient, auth: dict[str, str]) -> None:
    post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})
    res = post(
        client,
        "/api/v1/events",
        auth,
        {
            "events": [
                {
                    "contact": {"email": "paul.martin@example.fr"},
                    "type": "teleport",
                    "occurred_at": "2026-01-01",
                }
            ]
        },
    )
    assert res.status_code == 422
    assert res.json["error"]["details"][0]["field"] == "type"
    res = post(
        client,
        "/api/v1/events",
        auth,
        {
            "events": [
                {
                    "contact": {"email": "nobody@example.fr"},
                    "type": "open",
                    "occurred_at": "2026-01-01",
                }
            ]
        },
    )
    assert res.status_code == 422
    assert res.json["error"]["details"][0] == {
        "index": 0,
        "field": "contact",
        "problem": "no contact in the register with this email",
    }


def test_every_api_call_needs_a_key_but_the_openapi_document(client: FlaskClient) -> None:
    assert client.post("/api/v1/contacts", json={"contacts": []}).status_code == 401
    assert (
        client.post(
            "/api/v1/contacts", json={"contacts": []}, headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    doc = client.get("/api/v1/openapi.json")
    assert doc.status_code == 200
    assert doc.json["openapi"].startswith("3.")


def test_a_suppression_without_channels_covers_all_channels(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    res = post(
        client, "/api/v1/suppressions", auth, {"entries": [{"phone": "06 12 34 56 78", "reason": "manual"}]}
    )
    assert res.status_code == 200, res.json
    post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})
    check = post(
        client,
        "/api/v1/checks",
        auth,
        {
            "campaign": {"channel": "postal", "purpose": "commercial", "sender": "ACME SAS"},
            "recipients": [{"external_id": "crm-42"}],
        },
    )
    assert check.json["verdicts"][0]["reasons"][0] == "suppressed.manual"


def test_suppressions_are_stored_as_keyed_hashes_only(
    client: FlaskClient, auth: dict[str, str], app: Any
) -> None:
    res = post(
        client,
        "/api/v1/suppressions",
        auth,
        {
            "entries": [
                {
                    "email": "Gone@Example.fr",
                    "reason": "unsubscribe",
                    "channels": "all",
                    "occurred_at": "2026-03-01",
                }
            ]
        },
    )
    assert res.status_code == 200, res.json
    from sqlalchemy import text

    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        rows = conn.execute(text("SELECT coord_hash, reason, channels FROM suppressions")).all()
    assert len(rows) == 1
    assert "gone" not in rows[0][0] and len(rows[0][0]) == 64
    assert rows[0][0] == app.extensions["gatekeeper.context"].hasher.coordinate("email", "gone@example.fr")
