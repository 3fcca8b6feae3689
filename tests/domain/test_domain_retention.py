"""Retention clocks (RULES.md §4): what starts, restarts and never restarts a clock."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from typing import Any

import pytest
from domain_builders import at, consent, contact, contract, interest, policy, purchase

from gatekeeper.domain import (
    ContactFacts,
    RetentionClock,
    add_years,
    compute_clock,
    interest_counts,
    retention_state,
    summarise,
)

P = pytest.param


@pytest.mark.parametrize(
    ("facts", "clock", "anchor_kind", "anchor", "deadline"),
    [
        P(
            contact(),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: collection + 3 years",
        ),
        P(
            contact(interests=(interest("click", "2026-02-01"),)),
            "prospect",
            "interest.click",
            "2026-02-01",
            "2029-02-01",
            id="prospect: a click in our message restarts",
        ),
        P(
            contact(interests=(interest("reply", "2026-03-05"),)),
            "prospect",
            "interest.reply",
            "2026-03-05",
            "2029-03-05",
            id="prospect: a reply restarts",
        ),
        P(
            contact(opens=(at("2026-02-01"),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: an open never restarts",
        ),
        P(
            contact(interests=(interest("click", "2026-02-01", counts=False),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: a scanner click never restarts",
        ),
        P(
            contact(accounts_created=(at("2026-02-01"),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: creating an account never restarts",
        ),
        P(
            contact(consents=(consent(when="2026-04-01"),)),
            "prospect",
            "consent",
            "2026-04-01",
            "2029-04-01",
            id="prospect: a new explicit consent restarts",
        ),
        P(
            contact(consents=(consent(when="2026-04-01", prechecked=True),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: a pre-ticked box never restarts",
        ),
        P(
            contact(consents=(consent(when="2026-04-01", given=False),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="prospect: a refusal never restarts",
        ),
        P(
            contact(purchases=(purchase(when="2026-03-01"),)),
            "client",
            "purchase",
            "2026-03-01",
            "2029-03-01",
            id="client: last purchase + 3 years",
        ),
        P(
            contact(purchases=(purchase(when="2026-03-01"), purchase(when="2025-09-01"))),
            "client",
            "purchase",
            "2026-03-01",
            "2029-03-01",
            id="client: the latest of several purchases",
        ),
        P(
            contact(purchases=(purchase(when="2026-03-01", warranty_until=at("2028-03-01")),)),
            "client",
            "warranty_end",
            "2028-03-01",
            "2031-03-01",
            id="client: warranty end",
        ),
        P(
            contact(
                purchases=(purchase(when="2026-03-01"),),
                interests=(interest("inbound_request", "2026-06-01"),),
            ),
            "client",
            "interest.inbound_request",
            "2026-06-01",
            "2029-06-01",
            id="client: a later contact from the client",
        ),
        P(
            contact(contracts=(contract(start="2026-01-01", end="2027-01-01"),)),
            "client",
            "contract_end",
            "2027-01-01",
            "2030-01-01",
            id="client: end of contract + 3 years",
        ),
        P(
            contact(purchases=(purchase(seller="Other SA"),)),
            "prospect",
            "collection",
            "2025-06-10",
            "2028-06-10",
            id="a purchase from another entity is not ours",
        ),
        P(
            contact(
                purchases=(purchase(when="2025-07-01"),),
                consents=(consent(when="2026-02-01", method="reconsent"),),
            ),
            "prospect",
            "reconsent",
            "2026-02-01",
            "2029-02-01",
            id="ex-client who accepted a reconsent: prospect from that consent",
        ),
        P(
            contact(
                purchases=(purchase(when="2026-03-01"),),
                consents=(consent(when="2026-02-01", method="reconsent"),),
            ),
            "client",
            "purchase",
            "2026-03-01",
            "2029-03-01",
            id="a purchase after the reconsent makes a client again",
        ),
        P(
            contact(collected_at=at("2024-02-29T12:00")),
            "prospect",
            "collection",
            "2024-02-29T12:00",
            "2027-02-28T12:00",
            id="29 February + 3 years -> 28 February",
        ),
    ],
)
def test_clock(facts: ContactFacts, clock: str, anchor_kind: str, anchor: str, deadline: str) -> None:
    result = compute_clock(facts, policy())
    assert (result.clock, result.anchor_kind) == (clock, anchor_kind)
    assert (result.anchor_at, result.deadline) == (at(anchor), at(deadline))
    assert result.reconsent_at == at(deadline) - timedelta(days=30)
    assert result.reminder_at == at(deadline) - timedelta(days=7)


def test_running_contract_has_no_deadline() -> None:
    clock = compute_clock(contact(contracts=(contract(end=None),)), policy())
    assert (clock.clock, clock.deadline, clock.reconsent_at) == ("client", None, None)
    assert (
        retention_state(clock, at("2040-01-01"), anonymised=False, refused=False, policy=policy()) == "active"
    )


def test_b2b_own_clock_when_the_setting_says_so() -> None:
    pol = dataclasses.replace(policy(), b2b_same_clock=False, b2b_retention_years=2)
    assert compute_clock(contact(audience="b2b"), pol).deadline == at("2027-06-10")
    assert compute_clock(contact(), pol).deadline == at("2028-06-10")


EVENTS: dict[str, Any] = {
    "purchases": (purchase(when="2025-07-01"), purchase("coffee_beans", "2025-08-01")),
    "consents": (consent(when="2025-12-01"), consent(when="2026-02-01", method="reconsent")),
    "interests": (
        interest("click", "2026-03-01"),
        interest("click", "2026-04-01", counts=False),
        interest("download", "2025-10-01"),
    ),
}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_out_of_order_events_give_the_same_clock(order: tuple[int, ...]) -> None:
    shuffled = {k: tuple(v[i] for i in order if i < len(v)) for k, v in EVENTS.items()}
    clock = compute_clock(contact(**shuffled), policy())
    assert (clock.clock, clock.anchor_kind, clock.anchor_at) == (
        "prospect",
        "interest.click",
        at("2026-03-01"),
    )


def test_an_older_event_arriving_late_never_moves_the_clock_back() -> None:
    before = compute_clock(contact(interests=(interest("click", "2026-03-01"),)), policy())
    after = compute_clock(
        contact(interests=(interest("click", "2026-03-01"),), purchases=(purchase(when="2025-07-01"),)),
        policy(),
    )
    assert before.deadline is not None and after.deadline is not None
    assert after.deadline >= before.deadline


CLOCK = RetentionClock(
    "prospect", at("2025-06-10"), "collection", at("2028-06-10"), at("2028-05-11"), at("2028-06-03")
)


@pytest.mark.parametrize(
    ("as_of", "anonymised", "refused", "state"),
    [
        P("2026-01-01", False, False, "active", id="well before the deadline -> active"),
        P("2028-05-10T23:59", False, False, "active", id="the minute before the lead -> active"),
        P("2028-05-11", False, False, "reconsent_due", id="deadline - 30 days -> reconsent_due"),
        P("2028-06-09T23:59", False, False, "reconsent_due", id="last minute -> reconsent_due"),
        P("2028-06-10", False, False, "expired", id="deadline reached -> expired"),
        P("2026-01-01", False, True, "expired", id="reconsent refused -> expired at once"),
        P("2026-01-01", True, False, "anonymised", id="anonymised -> anonymised"),
    ],
)
def test_retention_state(as_of: str, anonymised: bool, refused: bool, state: str) -> None:
    assert retention_state(CLOCK, at(as_of), anonymised=anonymised, refused=refused, policy=policy()) == state


def test_summarise_flags_a_refused_reconsent_only_after_the_anchor() -> None:
    refused = consent("email", "2026-02-01", method="reconsent", given=False)
    assert summarise(contact(consents=(refused,)), policy()).reconsent_refused
    later = interest("click", "2026-03-01")
    assert not summarise(contact(consents=(refused,), interests=(later,)), policy()).reconsent_refused


BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130 Safari/537.36"


@pytest.mark.parametrize(
    ("kind", "agent", "seconds", "method", "counts"),
    [
        P("click", BROWSER, 3600, "GET", True, id="a person clicks an hour later -> counts"),
        P("click", BROWSER, 10, "GET", True, id="click at exactly the grace period -> counts"),
        P("click", BROWSER, 9, "GET", False, id="click 9 s after the send -> scanner"),
        P("click", BROWSER, 3600, "HEAD", False, id="HEAD request -> scanner"),
        P("click", "Mozilla/5.0 Barracuda Sentinel", 3600, "GET", False, id="scanner agent"),
        P("download", "", 3600, "GET", False, id="no user agent -> scanner [cautious]"),
        P("download", BROWSER, None, "GET", True, id="download, send time unknown -> counts"),
        P("reply", None, None, "POST", True, id="a reply always counts"),
        P("open", BROWSER, 3600, "GET", False, id="an open never counts"),
    ],
)
def test_interest_counts(
    kind: str, agent: str | None, seconds: float | None, method: str, counts: bool
) -> None:
    assert interest_counts(kind, agent, seconds, method, policy=policy()) is counts


def test_add_years_is_calendar_wise() -> None:
    assert add_years(at("2025-06-10"), 3) == at("2028-06-10")
    assert add_years(at("2028-02-29T12:00"), 1) == at("2029-02-28T12:00")


@pytest.mark.parametrize(
    ("seconds", "method", "counts"),
    [
        P(3600, "GET", True, id="platform click without an agent field, an hour later -> counts"),
        P(5, "GET", False, id="platform click without an agent field, 5 s after the send -> scanner"),
        P(None, "GET", True, id="platform click without an agent field, send time unknown -> counts"),
        P(3600, "HEAD", False, id="a HEAD is a scanner whatever the source"),
    ],
)
def test_a_source_that_never_reports_user_agents_is_judged_by_the_other_signals(
    seconds: float | None, method: str, counts: bool
) -> None:
    result = interest_counts("click", None, seconds, method, policy=policy(), agent_reported=False)
    assert result is counts
