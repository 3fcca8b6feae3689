"""The OpenAPI 3.1 document of API v1, served without a key at ``/api/v1/openapi.json``.

A test checks that every ``/api/v1`` route of the app is described here, so the document
cannot silently fall behind the code.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from gatekeeper.api import bp

_STR = {"type": "string"}
_TS = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339; a date alone is 00:00 Europe/Paris",
}
_CHANNEL = {"type": "string", "enum": ["email", "sms", "automated_call", "fax", "phone", "postal"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or []}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": _STR,
                    "message": _STR,
                    "details": {
                        "type": "array",
                        "items": {"type": "object", "description": "row or index, field, problem"},
                    },
                }
            )
        },
        ["error"],
    ),
    "ContactRef": _obj({"external_id": _STR, "email": _STR, "phone": _STR}),
    "Contact": _obj(
        {
            "external_id": _STR,
            "email": {"type": "string", "format": "email"},
            "phone": {
                "type": "string",
                "description": "E.164, or national format read in the default region",
            },
            "first_name": _STR,
            "last_name": _STR,
            "postal_address": _obj({k: _STR for k in ("line1", "line2", "postcode", "city", "country")}),
            "audience": {"type": "string", "enum": ["b2c", "b2b"]},
            "profession_tags": {"type": "array", "items": _STR},
            "collected_at": _TS,
            "collected_by": _STR,
            "source": _obj(
                {
                    "type": {
                        "type": "string",
                        "enum": [
                            "direct",
                            "purchase",
                            "event",
                            "broker",
                            "partner",
                            "scraped",
                            "public_directory",
                        ],
                    },
                    "name": _STR,
                    "proof_ref": _STR,
                }
            ),
            "purpose": {
                "type": "string",
                "enum": ["marketing", "customer_service", "recruitment", "other"],
            },
            "timezone": _STR,
            "attributes": {"type": "object"},
        },
        ["collected_at"],
    ),
    "Event": _obj(
        {
            "contact": _ref("ContactRef"),
            "type": {
                "type": "string",
                "enum": [
                    "purchase",
                    "contract",
                    "consent",
                    "opposition",
                    "interest",
                    "open",
                    "call_attempt",
                    "account_created",
                ],
            },
            "occurred_at": _TS,
            "product_category": _STR,
            "seller": _STR,
            "amount": {"type": "number"},
            "warranty_until": _TS,
            "kind": _STR,
            "starts_at": _TS,
            "ends_at": _TS,
            "channel": _CHANNEL,
            "given": {"type": "boolean"},
            "method": _STR,
            "prechecked": {"type": "boolean"},
            "bundled_with_terms": {"type": "boolean"},
            "text_version": _STR,
            "form_id": _STR,
            "url": _STR,
            "ip": _STR,
            "user_agent": _STR,
            "sender": _STR,
            "partners": {"type": "array", "items": _STR},
            "channels": {"oneOf": [{"type": "array", "items": _CHANNEL}, {"const": "all"}]},
            "via": _STR,
            "detail": _STR,
            "outcome": _STR,
        },
        ["contact", "type"],
    ),
    "Suppression": _obj(
        {
            "email": _STR,
            "phone": _STR,
            "reason": {
                "type": "string",
                "enum": ["unsubscribe", "hard_bounce", "complaint", "manual", "bloctel", "erasure"],
            },
            "channels": {"oneOf": [{"type": "array", "items": _CHANNEL}, {"const": "all"}]},
            "occurred_at": _TS,
        },
        ["reason"],
    ),
    "Job": _obj(
        {
            "id": {"type": "integer"},
            "kind": _STR,
            "state": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
            "progress": _obj({"done": {"type": "integer"}, "total": {"type": ["integer", "null"]}}),
            "result": {"type": "object"},
            "errors": {"type": "array", "items": {"type": "object"}},
        }
    ),
    "Retention": _obj(
        {
            "state": {
                "type": "string",
                "enum": ["active", "reconsent_due", "expired", "anonymised"],
            },
            "deadline": {"type": ["string", "null"], "format": "date-time"},
            "clock": {"type": "string", "enum": ["client", "prospect"]},
            "started_by": {"type": "object"},
        }
    ),
    "Campaign": _obj(
        {
            "name": _STR,
            "channel": _CHANNEL,
            "purpose": {"type": "string", "enum": ["commercial", "informational", "charity"]},
            "sender": {"type": "string", "description": "legal entity that sends"},
            "sender_nonprofit": {"type": "boolean"},
            "product_category": _STR,
            "topic_tags": {"type": "array", "items": _STR},
            "professional_relevance": {"type": "boolean"},
            "partner": {"type": ["string", "null"]},
            "sector": {"type": ["string", "null"]},
            "send_at": _TS,
        },
        ["channel", "purpose", "sender"],
    ),
    "Verdict": _obj(
        {
            "recipient": {"description": "as sent"},
            "contact_id": {"type": ["integer", "null"]},
            "decision": {"type": "string", "enum": ["allow", "block"]},
            "reasons": {
                "type": "array",
                "items": _STR,
                "description": "stable reason codes; the first decided",
            },
            "basis": {"type": ["string", "null"]},
            "retention": {
                "type": ["object", "null"],
                "properties": {"state": _STR, "deadline": _TS},
            },
        }
    ),
    "CheckResult": _obj(
        {
            "policy": _obj({"id": _STR, "version": _STR}),
            "as_of": _TS,
            "summary": _obj(
                {
                    "allowed": {"type": "integer"},
                    "blocked": {"type": "integer"},
                    "duplicates": {"type": "integer"},
                    "by_reason": {"type": "object"},
                }
            ),
            "verdicts": {"type": "array", "items": {"$ref": "#/components/schemas/Verdict"}},
        }
    ),
    "ContactView": {
        "allOf": [
            _ref("Contact"),
            _obj(
                {
                    "id": {"type": "integer"},
                    "retention": _ref("Retention"),
                    "consents": {"type": "object"},
                    "suppressions": {"type": "array"},
                }
            ),
        ]
    },
}


def _body(schema: dict[str, Any], content: str = "application/json") -> dict[str, Any]:
    return {"required": True, "content": {content: {"schema": schema}}}


def _ok(schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    errors = {
        code: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
        for code, text in (
            ("400", "malformed"),
            ("401", "no or bad API key"),
            ("403", "missing scope"),
            ("413", "too large"),
            ("422", "invalid content, per row/field"),
            (
                "503",
                "database busy or unreachable, or (a check) unsubscribes not recorded yet:"
                " nothing changed, retry after Retry-After seconds",
            ),
        )
    }
    return {
        status: {"description": "success", "content": {"application/json": {"schema": schema}}},
        **errors,
    }


_CSV_BODY = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {"schema": _obj({"file": {"type": "string", "format": "binary"}})},
    },
}
_AS_OF = {"name": "as_of", "in": "query", "required": False, "schema": _TS}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

PATHS: dict[str, Any] = {
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document (no key needed)",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1"}},
        }
    },
    "/api/v1/contacts": {
        "post": {
            "summary": "Upsert contacts (identity: external_id, else e-mail, else phone); all-or-nothing",
            "requestBody": _body(
                _obj({"contacts": {"type": "array", "maxItems": 10000, "items": _ref("Contact")}})
            ),
            "responses": _ok(
                _obj(
                    {
                        "created": {"type": "integer"},
                        "updated": {"type": "integer"},
                        "unchanged": {"type": "integer"},
                        "contacts": {"type": "array"},
                    }
                )
            ),
        }
    },
    "/api/v1/contacts/{id}": {
        "get": {
            "summary": "A contact with its retention view",
            "parameters": [_ID, _AS_OF],
            "responses": _ok(_ref("ContactView")),
        }
    },
    "/api/v1/events": {
        "post": {
            "summary": "Append facts; an unknown contact is a 422 for that item; "
            "the same fact twice is stored once",
            "requestBody": _body(
                _obj({"events": {"type": "array", "maxItems": 10000, "items": _ref("Event")}})
            ),
            "responses": _ok(_obj({"stored": {"type": "integer"}, "duplicates": {"type": "integer"}})),
        }
    },
    "/api/v1/suppressions": {
        "post": {
            "summary": "Add suppressions (stored as keyed hashes)",
            "requestBody": _body(_obj({"entries": {"type": "array", "items": _ref("Suppression")}})),
            "responses": _ok(_obj({"stored": {"type": "integer"}})),
        }
    },
    "/api/v1/suppressions/bloctel": {
        "post": {
            "summary": "A Bloctel scrub result: one listed number a line",
            "parameters": [{"name": "checked_at", "in": "query", "required": True, "schema": _TS}],
            "requestBody": {"required": True, "content": {"text/plain": {"schema": _STR}}},
            "responses": _ok(_obj({"stored": {"type": "integer"}})),
        }
    },
    "/api/v1/imports": {
        "post": {
            "summary": "CSV import as a background job (columns = JSON field names, dotted for nested)",
            "parameters": [
                {
                    "name": "kind",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": ["contacts", "events", "suppressions"]},
                }
            ],
            "requestBody": _CSV_BODY,
            "responses": _ok(_ref("Job"), "202"),
        }
    },
    "/api/v1/checks": {
        "post": {
            "summary": "Decide up to 10,000 recipients now; verdicts in the order sent",
            "requestBody": _body(
                _obj(
                    {
                        "campaign": _ref("Campaign"),
                        "as_of": _TS,
                        "recipients": {
                            "type": "array",
                            "maxItems": 10000,
                            "items": {"oneOf": [_STR, _ref("ContactRef")]},
                        },
                    },
                    ["campaign", "recipients"],
                )
            ),
            "responses": _ok(_ref("CheckResult")),
        }
    },
    "/api/v1/campaigns": {
        "post": {
            "summary": "Create a campaign (for lists of any size)",
            "requestBody": _body(_ref("Campaign")),
            "responses": _ok(_obj({"id": {"type": "integer"}}), "201"),
        }
    },
    "/api/v1/campaigns/{id}": {
        "get": {
            "summary": "The campaign, its last list job and the run summary",
            "parameters": [_ID],
            "responses": _ok({"type": "object"}),
        }
    },
    "/api/v1/campaigns/{id}/lists": {
        "post": {
            "summary": "Upload a list (CSV with an email or phone column; "
            "other columns carried through) as a job",
            "parameters": [_ID, _AS_OF],
            "requestBody": _CSV_BODY,
            "responses": _ok(_ref("Job"), "202"),
        }
    },
    "/api/v1/campaigns/{id}/verdicts.csv": {
        "get": {
            "summary": "Stream the list's rows with decision and reasons appended",
            "parameters": [
                _ID,
                {
                    "name": "decision",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["allow", "block"]},
                },
            ],
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": _STR}}}},
        }
    },
    "/api/v1/links": {
        "post": {
            "summary": "Tracked URLs (/c/…, /d/…) for a platform's own messages; a click restarts the clock",
            "requestBody": _body(
                _obj(
                    {
                        "campaign_id": {"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 64}]},
                        "sent_at": _TS,
                        "links": {
                            "type": "array",
                            "items": _obj(
                                {
                                    "contact": _ref("ContactRef"),
                                    "url": {"type": "string", "format": "uri", "maxLength": 2048},
                                    "kind": {"type": "string", "enum": ["click", "download"]},
                                },
                                ["contact", "url"],
                            ),
                        },
                    },
                    ["campaign_id", "links"],
                )
            ),
            "responses": _ok(
                _obj(
                    {
                        "campaign_id": {},
                        "sent_at": _TS,
                        "links": {
                            "type": "array",
                            "items": _obj(
                                {k: _STR for k in ("kind", "url", "tracked_url")}
                                | {"index": {"type": "integer"}, "contact_id": {"type": "integer"}}
                            ),
                        },
                    }
                )
            ),
        }
    },
    "/api/v1/jobs/{id}": {
        "get": {
            "summary": "A job's state and progress",
            "parameters": [_ID],
            "responses": _ok(_ref("Job")),
        }
    },
}


# Proof and rights (issue 7): the evidence pack, the person's rights, the journal, the archive.
_ZIP = {"200": {"description": "zip of JSON files", "content": {"application/zip": {"schema": _STR}}}}
PATHS["/api/v1/contacts/{id}"]["patch"] = {
    "summary": "Rectify the person's data (first_name, last_name, postal_address, timezone, email, phone);"
    " journaled",
    "parameters": [_ID],
    "requestBody": _body({"type": "object"}),
    "responses": _ok(_obj({"id": {"type": "integer"}, "rectified": {"type": "array", "items": _STR}})),
}
PATHS.update(
    {
        "/api/v1/contacts/{id}/evidence": {
            "get": {
                "summary": "The proof pack: source, consents with proof, clock and deadline, suppressions,"
                " messages, verdict runs, journal positions (JSON; ?format=html printable)",
                "parameters": [
                    _ID,
                    _AS_OF,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["json", "html"]},
                    },
                ],
                "responses": _ok({"type": "object"}),
            }
        },
        "/api/v1/contacts/{id}/export": {
            "get": {
                "summary": "Access right: everything held on the person, machine-readable, in one zip;"
                " journaled",
                "parameters": [_ID],
                "responses": _ZIP,
            }
        },
        "/api/v1/contacts/{id}/erase": {
            "post": {
                "summary": "Erasure right: anonymise now, keyed-hash suppression kept"
                " (erasure, all channels), invoices moved to the legal archive; journaled",
                "parameters": [_ID],
                "responses": _ok(
                    _obj({"id": {"type": "integer"}, "anonymised_at": _TS, "already": {"type": "boolean"}})
                ),
            }
        },
        "/api/v1/contacts/{id}/objection": {
            "post": {
                "summary": "Objection right: every channel unless named; honoured at once as suppressions",
                "parameters": [_ID],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": _obj(
                                {
                                    "channels": {
                                        "oneOf": [{"type": "array", "items": _CHANNEL}, {"const": "all"}]
                                    },
                                    "via": _STR,
                                }
                            )
                        }
                    },
                },
                "responses": _ok(_obj({"id": {"type": "integer"}, "channels": {}})),
            }
        },
        "/api/v1/audit/verify": {
            "get": {
                "summary": "Walk the proof journal (audit scope):"
                " the first entry altered, removed or inserted",
                "parameters": [
                    {
                        "name": "anchor",
                        "in": "query",
                        "required": False,
                        "schema": _STR,
                        "description": "SEQ:HASH recorded from an earlier export",
                    }
                ],
                "responses": _ok({"type": "object"}),
            }
        },
        "/api/v1/archive/records": {
            "get": {
                "summary": "Read the legal archive (audit scope only); every read is logged and journaled",
                "parameters": [
                    {"name": "purpose", "in": "query", "required": True, "schema": _STR},
                    {"name": "kind", "in": "query", "required": False, "schema": _STR},
                ],
                "responses": _ok(_obj({"records": {"type": "array", "items": {"type": "object"}}})),
            }
        },
    }
)


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gatekeeper API",
            "version": "1",
            "description": "Contact register and campaign gate for French/EU prospecting rules.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": PATHS,
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(document())
