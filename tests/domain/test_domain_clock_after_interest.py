"""``clock_after_interest``: one more counting interest, without reading the facts again, must
give exactly the clock ``compute_clock`` gives with that interest added (RULES.md §4)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta

import pytest
from domain_builders import at, consent, contact, contract, interest, policy, purchase

from gatekeeper.domain import ContactFacts, compute_clock
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import clock_after_interest, reconsent_refused, retention_years

P = pytest.param
B2B_OWN = dataclasses.replace(policy(), b2b_same_clock=False, b2b_retention_years=2)

FACT_SETS = {
    "prospect, collection only": contact(),
    "prospect after an earlier click": contact(interests=(interest("click", "2026-02-01"),)),
    "prospect after a consent": contact(consents=(consent(when="2026-05-01"),)),
    "client after a purchase": contact(purchases=(purchase(when="2026-01-10"),)),
    "client whose warranty ends late": contact(
        purchases=(purchase(when="2026-01-10", warranty_until=at("2028-01-10")),)
    ),
    "client under a running contract": contact(contracts=(contract(start="2026-01-01"),)),
    "client whose contract ended": contact(contracts=(contract(start="2025-01-01", end="2026-03-01"),)),
    "ex-client who accepted a reconsent": contact(
        purchases=(purchase(when="2025-09-01"),),
        consents=(consent(when="2026-02-01", method="reconsent"),),
    ),
    "b2b prospect": contact(audience="b2b"),
    "b2b client": contact(audience="b2b", purchases=(purchase(when="2026-01-10"),)),
    "collected on 29 February": contact(collected_at=at("2024-02-29")),
}
INSTANTS = ["2025-01-01", "2026-02-01", "2026-11-22T10:00", "2028-02-29T12:00", "2031-01-01"]


def with_interest(facts: ContactFacts, kind: str, when: str) -> ContactFacts:
    return dataclasses.replace(facts, interests=(*facts.interests, interest(kind, when)))


@pytest.mark.parametrize("pol", [P(policy(), id="fr-2026"), P(B2B_OWN, id="b2b own clock")])
@pytest.mark.parametrize(
    ("name", "kind", "when"),
    [
        P(n, k, w, id=f"{n} + {k} on {w}")
        for n, k, w in itertools.product(FACT_SETS, ("click", "download"), INSTANTS)
    ],
)
def test_one_more_interest_gives_the_clock_of_all_the_facts(
    name: str, kind: str, when: str, pol: Policy
) -> None:
    facts = FACT_SETS[name]
    before = compute_clock(facts, pol)
    after = clock_after_interest(before, facts.audience, kind, at(when), pol)
    assert after == compute_clock(with_interest(facts, kind, when), pol)


@pytest.mark.parametrize("name", list(FACT_SETS))
def test_an_interest_never_moves_a_clock_backwards(name: str) -> None:
    facts = FACT_SETS[name]
    before = compute_clock(facts, policy())
    after = clock_after_interest(before, facts.audience, "click", at("2020-01-01"), policy())
    assert after == before
    later = clock_after_interest(
        before, facts.audience, "click", before.anchor_at + timedelta(days=1), policy()
    )
    assert later.anchor_at >= before.anchor_at
    assert before.deadline is None or (later.deadline is not None and later.deadline >= before.deadline)


def test_a_running_contract_is_left_alone() -> None:
    facts = FACT_SETS["client under a running contract"]
    before = compute_clock(facts, policy())
    assert clock_after_interest(before, "b2c", "click", at("2027-01-01"), policy()) is before


def test_the_clock_holds_no_refusal_so_the_caller_recomputes_a_refused_one() -> None:
    # Documented precondition: a refused reconsent is not in the clock, only in the facts.
    refused = consent("email", "2026-02-01", method="reconsent", given=False)
    facts = contact(consents=(refused,))
    assert reconsent_refused(facts, compute_clock(facts, policy()))


@pytest.mark.parametrize(
    ("audience", "clock", "pol", "years"),
    [
        P("b2c", "prospect", policy(), 3, id="b2c prospect: 3 years"),
        P("b2c", "client", policy(), 3, id="b2c client: 3 years"),
        P("b2b", "prospect", policy(), 3, id="b2b same clock"),
        P("b2b", "client", B2B_OWN, 2, id="b2b own clock"),
    ],
)
def test_retention_years_follow_the_policy(audience: str, clock: str, pol: Policy, years: int) -> None:
    assert retention_years(audience, clock, pol) == years
