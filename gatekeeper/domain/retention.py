"""Retention clocks: how long a contact may be kept (RULES.md §4).

Theory of operation
-------------------
A contact's deadline is a pure function of the *set* of its facts, never of their arrival
order: each clock is the maximum over the events that may start it, so an older event that
arrives late can never move a clock backwards (max is commutative and monotone).

* Prospect (CNIL délibération 2021-131): anchor = latest of collection, each contact coming
  from the person (click, download, reply, inbound request, demo — only `counts=True`, so
  link-scanner clicks never count), each new explicit consent. Deadline = anchor + 3 years.
* Client (same référentiel): anchor = end of the relationship = latest of purchase, warranty
  end, contract end, and any contact from the client; a running contract (no end) means no
  deadline. Only purchases sold by the collecting entity make a client [cautious].
* Ex-client who accepted a reconsent (a consent with method "reconsent" later than every
  purchase, warranty and contract end): a prospect again, anchored at that consent.
* Never restart: opens / pixels, our own sends and calls, delivery receipts, auto-replies,
  scanner clicks, account creation (RULES.md §4; CNIL, Spartoo 2020 on opens).

Years are added calendar-wise (29 Feb -> 28 Feb). `retention_state` turns a clock into
active -> reconsent_due (deadline - lead) -> expired (deadline reached, or reconsent refused),
or anonymised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatekeeper.domain.facts import ContactFacts, utc
from gatekeeper.domain.policy import Policy

RECONSENT_METHOD = "reconsent"
STATES = ("active", "reconsent_due", "expired", "anonymised")


@dataclass(frozen=True, slots=True)
class RetentionClock:
    """Which clock runs, what started it, and the dates that follow from it."""

    clock: str  # "client" | "prospect"
    anchor_at: datetime
    anchor_kind: str
    deadline: datetime | None  # None while a contract runs
    reconsent_at: datetime | None  # deadline - reconsent lead
    reminder_at: datetime | None  # deadline - reminder days (one reminder)


def add_years(moment: datetime, years: int) -> datetime:
    """Calendar years; 29 February falls back to 28 February (the earlier day) [cautious]."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def _latest(candidates: Iterable[tuple[datetime, str]]) -> tuple[datetime, str]:
    # Ties broken by kind name so that the result never depends on input order.
    return max(candidates)


def _prospect_events(facts: ContactFacts) -> list[tuple[datetime, str]]:
    events = [(facts.collected_at, "collection")]
    events += [(i.occurred_at, f"interest.{i.kind}") for i in facts.interests if i.counts]
    for c in facts.consents:
        if c.explicit:  # a new explicit consent is a contact from the person (CNIL 2021-131)
            kind = "reconsent" if c.method == RECONSENT_METHOD else "consent"
            events.append((c.occurred_at, kind))
    return events


def _client_events(facts: ContactFacts) -> tuple[list[tuple[datetime, str]], bool]:
    """Purchases, warranty and contract ends of the collecting entity; and 'contract running'."""
    events: list[tuple[datetime, str]] = []
    for p in facts.purchases:
        if p.seller == facts.collected_by:
            events.append((p.occurred_at, "purchase"))
            if p.warranty_until is not None:
                events.append((p.warranty_until, "warranty_end"))
    running = False
    for k in facts.contracts:
        if k.ends_at is None:
            running = True
            events.append((k.starts_at, "contract_running"))
        else:
            events.append((k.ends_at, "contract_end"))
    return events, running


def retention_years(audience: str, clock: str, policy: Policy) -> int:
    """How many years a clock of this kind runs for this audience."""
    if audience == "b2b" and not policy.b2b_same_clock:
        return policy.b2b_retention_years
    if clock == "client":
        return policy.client_retention_years
    return policy.prospect_retention_years


def _clock(clock: str, anchor: tuple[datetime, str], years: int | None, p: Policy) -> RetentionClock:
    if years is None:
        return RetentionClock(clock, anchor[0], anchor[1], None, None, None)
    deadline = add_years(anchor[0], years)
    return RetentionClock(
        clock,
        anchor[0],
        anchor[1],
        deadline,
        deadline - timedelta(days=p.reconsent_lead_days),
        deadline - timedelta(days=p.reconsent_reminder_days),
    )


def compute_clock(facts: ContactFacts, policy: Policy) -> RetentionClock:
    """The contact's retention clock, computed from all its facts (order-independent)."""
    prospect = _prospect_events(facts)
    client, running = _client_events(facts)
    if not client:
        return _clock(
            "prospect", _latest(prospect), retention_years(facts.audience, "prospect", policy), policy
        )
    if running:  # CNIL 2021-131: kept for the duration of the contract
        return _clock("client", _latest(client), None, policy)
    relationship_end = _latest(client)[0]
    reconsents = [e for e in prospect if e[1] == "reconsent" and e[0] > relationship_end]
    if reconsents:  # RULES.md §4: an ex-client who accepted a reconsent is a prospect again
        anchor = _latest(prospect)  # >= the reconsent, itself later than every client event
        return _clock("prospect", anchor, retention_years(facts.audience, "prospect", policy), policy)
    # The client clock also takes the latest contact from the client (and collection, so
    # that a late, older purchase never moves the deadline backwards).
    anchor = _latest(client + prospect)
    return _clock("client", anchor, retention_years(facts.audience, "client", policy), policy)


def reconsent_refused(facts: ContactFacts, clock: RetentionClock) -> bool:
    """A reconsent answered "stop" after the clock's anchor: the contact expires at once."""
    return any(
        c.method == RECONSENT_METHOD and not c.given and c.occurred_at >= clock.anchor_at
        for c in facts.consents
    )


def retention_state(
    clock: RetentionClock, as_of: datetime, *, anonymised: bool, refused: bool, policy: Policy
) -> str:
    """active | reconsent_due | expired | anonymised at `as_of` (RULES.md §4).

    The deadline instant itself is already expired [cautious]; `policy` is accepted so that
    callers need not know which settings a future state depends on.
    """
    del policy  # the lead is already folded into clock.reconsent_at
    if anonymised:
        return "anonymised"
    if refused:
        return "expired"
    if clock.deadline is None or clock.reconsent_at is None:
        return "active"
    now = utc(as_of, "as_of")
    if now >= clock.deadline:
        return "expired"
    return "reconsent_due" if now >= clock.reconsent_at else "active"


def interest_counts(
    kind: str,
    user_agent: str | None,
    seconds_after_send: float | None,
    method: str,
    *,
    policy: Policy,
    agent_reported: bool = True,
) -> bool:
    """Whether a recorded interest restarts the clock: link scanners never do (RULES.md §4).

    Only clicks and downloads can come from a scanner: a HEAD request, a known scanner
    user agent, no user agent at all [cautious], or a hit within `click_grace_seconds` of the
    send is not a person. `agent_reported=False` says the source never reports user agents
    (an emailing platform's payload without the field): the missing agent then proves nothing
    and the other signals decide.
    """
    if kind not in ("click", "download"):
        return kind in ("reply", "inbound_request", "demo")
    if method.upper() == "HEAD" or (agent_reported and not user_agent):
        return False
    if not user_agent:
        return seconds_after_send is None or seconds_after_send >= policy.click_grace_seconds
    agent = user_agent.lower()
    if any(s in agent for s in policy.scanner_user_agent_substrings):
        return False
    return seconds_after_send is None or seconds_after_send >= policy.click_grace_seconds


def clock_after_interest(
    clock: RetentionClock, audience: str, interest_kind: str, at: datetime, policy: Policy
) -> RetentionClock:
    """The clock once one more *counting* interest at ``at`` is added to the facts it came from.

    Equal to ``compute_clock`` of those facts plus the interest (a test proves it over a table
    of fact sets), without reading the facts again: an interest is a contact from the person,
    which every branch of ``compute_clock`` counts in its anchor except a running contract (no
    deadline, anchored on client events only); and it cannot change which branch applies, since
    that depends on purchases, contracts and reconsents alone. So the anchor becomes the later
    of the two and the deadline follows; the clock never moves backwards (a max).
    The caller passes only an interest that counts (``interest_counts``) and a clock whose
    reconsent was not refused (a refusal's instant is not in the clock: recompute instead).
    """
    if clock.deadline is None:  # a running contract: kept for its duration (CNIL 2021-131)
        return clock
    anchor = max((clock.anchor_at, clock.anchor_kind), (utc(at, "at"), f"interest.{interest_kind}"))
    if anchor == (clock.anchor_at, clock.anchor_kind):
        return clock
    return _clock(clock.clock, anchor, retention_years(audience, clock.clock, policy), policy)
