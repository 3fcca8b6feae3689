"""Builders shared by the domain tests (no conftest: plain helpers with short defaults)."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gatekeeper.domain import (
    Campaign,
    ConsentFact,
    ContactFacts,
    Contract,
    InterestFact,
    Objection,
    Policy,
    Purchase,
    SuppressionFact,
    Verdict,
    decide,
    policy_from_mapping,
    situation_for,
    summarise,
)

POLICY_FILE = Path(__file__).resolve().parents[2] / "config" / "policies" / "fr-2026.toml"
PARIS = ZoneInfo("Europe/Paris")
ACME = "ACME SAS"


def policy_data() -> dict[str, Any]:
    with POLICY_FILE.open("rb") as fh:
        return tomllib.load(fh)


@cache
def policy() -> Policy:
    return policy_from_mapping(policy_data())


def at(text: str) -> datetime:
    """'2026-11-24' or '2026-11-24T11:00' read as Paris local time (API.md), in UTC."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=PARIS).astimezone(UTC)


def contact(**kw: Any) -> ContactFacts:
    fields: dict[str, Any] = {
        "audience": "b2c",
        "collected_at": at("2025-06-10"),
        "collected_by": ACME,
        "source_type": "direct",
        "purpose": "marketing",
    }
    fields.update(kw)
    return ContactFacts(**fields)


def consent(channel: str = "email", when: str = "2026-01-10", **kw: Any) -> ConsentFact:
    kw.setdefault("given", True)
    kw.setdefault("sender", ACME)
    return ConsentFact(channel=channel, occurred_at=at(when), **kw)


def objection(when: str = "2026-03-01", channels: Sequence[str] = ("email",)) -> Objection:
    return Objection(channels=frozenset(channels), occurred_at=at(when))


def purchase(category: str = "coffee_capsules", when: str = "2026-01-10", **kw: Any) -> Purchase:
    kw.setdefault("seller", ACME)
    return Purchase(occurred_at=at(when), product_category=category, **kw)


def contract(
    category: str = "coffee_capsules", start: str = "2026-01-01", end: str | None = None
) -> Contract:
    return Contract("subscription", at(start), at(end) if end else None, category)


def interest(kind: str = "click", when: str = "2026-02-01", counts: bool = True) -> InterestFact:
    return InterestFact(kind=kind, occurred_at=at(when), counts=counts)


def suppression(
    reason: str, when: str = "2026-04-01", channels: Sequence[str] = ("email",)
) -> SuppressionFact:
    return SuppressionFact(reason=reason, channels=frozenset(channels), occurred_at=at(when))


def campaign(channel: str = "email", send_at: str = "2026-11-24T11:00", **kw: Any) -> Campaign:
    kw.setdefault("purpose", "commercial")
    kw.setdefault("sender", ACME)
    kw.setdefault("product_category", "coffee_machines")
    if "topic_tags" in kw:
        kw["topic_tags"] = frozenset(kw["topic_tags"])
    return Campaign(channel=channel, send_at=at(send_at), **kw)


def run(
    facts: ContactFacts | None,
    camp: Campaign,
    *,
    as_of: str | None = None,
    address_valid: bool = True,
    generic: bool = False,
    personal_domain: bool = False,
    suppressions: Sequence[SuppressionFact] = (),
    attempts: Sequence[str] = (),
    bloctel_checked: str | None = None,
    pol: Policy | None = None,
) -> Verdict:
    """The whole pure pipeline: summarise -> situation_for -> decide."""
    pol = pol or policy()
    summary = summarise(facts, pol) if facts is not None else None
    situation = situation_for(
        summary,
        as_of=at(as_of) if as_of else camp.send_at,
        campaign=camp,
        address_valid=address_valid,
        generic_address=generic,
        personal_domain=personal_domain,
        suppressions=suppressions,
        call_attempts=[at(a) for a in attempts],
        bloctel_checked_at=at(bloctel_checked) if bloctel_checked else None,
        policy=pol,
    )
    return decide(camp, situation, pol)
