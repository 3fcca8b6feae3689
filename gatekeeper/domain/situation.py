"""`situation_for`: every date comparison the gate needs, done once, into a flat value.

A `Situation` is hashable and holds no datetime, so the shell can memoise `decide` with a
dict keyed by situation for one campaign: most recipients share a handful of situations.
Flags that do not matter for the campaign's channel take a neutral value to keep it so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatekeeper.domain.calendar import phone_call_allowed
from gatekeeper.domain.facts import Campaign, SuppressionFact, utc
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.profile import ContactSummary, GateProfile
from gatekeeper.domain.retention import retention_state

PHONE_LIKE = frozenset({"phone", "automated_call"})
# Only an objection can be lifted by a newer explicit consent (RULES.md §3.2); bounces,
# complaints, erasures and manual entries stay [cautious].
LIFTABLE = frozenset({"unsubscribe"})


@dataclass(frozen=True, slots=True)
class Situation:
    """One recipient for one campaign, as the gate sees it (no dates, all comparisons made)."""

    profile: GateProfile | None  # None: not in the register
    audience: str | None  # effective audience; None when unknown
    address_valid: bool = True
    generic_address: bool = False
    suppressions: frozenset[str] = frozenset()  # active reasons for this channel, not bloctel
    retention_state: str | None = None
    expires_before_send: bool = False
    consent_fresh: bool = True  # phone consent within its validity at send_at
    contract_in_progress: bool = False
    contract_covers_campaign: bool = False  # running contract analogous to the product
    consent_law_in_force: bool = False  # phone only: send_at >= 2026-08-11 (L223-1 new)
    send_window_ok: bool = True  # phone-like only: D223-9 days and hours
    call_attempts_in_window: int = 0  # phone-like only, capped at max_attempts
    bloctel_listed: bool = False  # phone only
    bloctel_fresh: bool = True  # phone only: scrub at most 30 days old at send_at


def _audience(profile: GateProfile | None, campaign: Campaign, personal_domain: bool) -> str | None:
    if profile is None:
        # An unknown business-domain e-mail may count as b2b (only if the policy allows it).
        business = campaign.channel == "email" and not personal_domain
        return "b2b" if business else None
    if profile.audience == "b2b" and personal_domain and not profile.b2b_confirmed:
        return "b2c"  # RULES.md §1: a personal mailbox is never b2b without an explicit flag
    return profile.audience


def _active_suppressions(
    entries: Sequence[SuppressionFact],
    summary: ContactSummary | None,
    campaign: Campaign,
    as_of: datetime,
) -> frozenset[str]:
    """Reasons matching the channel and known at `as_of`, minus lifted objections."""
    lifts = [
        at
        for ch, k, at in (summary.instants.consents if summary else ())
        if ch == campaign.channel and k.usable_for(campaign)
    ]
    lifted_until = max(lifts) if lifts else None
    return frozenset(
        e.reason
        for e in entries
        if campaign.channel in e.channels
        and e.occurred_at <= as_of
        and not (e.reason in LIFTABLE and lifted_until and lifted_until > e.occurred_at)
    )


def _consent_fresh(summary: ContactSummary | None, campaign: Campaign, policy: Policy) -> bool:
    """C. conso L223-1: phone consent valid `phone_consent_validity_days` [unconfirmed]."""
    if summary is None or campaign.channel != "phone":
        return True
    validity = timedelta(days=policy.phone_consent_validity_days)
    times = [at for ch, k, at in summary.instants.consents if ch == "phone" and k.usable_for(campaign)]
    return not times or max(times) + validity >= campaign.send_at


def _contracts(summary: ContactSummary | None, campaign: Campaign, policy: Policy) -> tuple[bool, bool]:
    """(any contract running at send_at, one whose object is analogous to the product)."""
    at = campaign.send_at
    running = [
        cat
        for cat, start, end in (summary.instants.contracts if summary else ())
        if start <= at and (end is None or at < end)
    ]
    covers = any(policy.analogous(cat, campaign.product_category) for cat in running)
    return bool(running), covers


def _attempts(call_attempts: Sequence[datetime], send_at: datetime, policy: Policy) -> int:
    """D223-9: calls in the 30 days up to the send; an attempt exactly 30 days old still
    counts [cautious]. Capped so that situations stay few."""
    since = send_at - timedelta(days=policy.phone_attempt_window_days)
    count = sum(1 for t in call_attempts if since <= utc(t, "call_attempt") <= send_at)
    return min(count, policy.phone_max_attempts)


def _retention(
    summary: ContactSummary | None, as_of: datetime, send_at: datetime, policy: Policy
) -> tuple[str | None, bool]:
    if summary is None:
        return None, False
    state = retention_state(
        summary.clock,
        as_of,
        anonymised=summary.anonymised,
        refused=summary.reconsent_refused,
        policy=policy,
    )
    deadline = summary.clock.deadline
    return state, deadline is not None and send_at >= deadline


def _fresh(bloctel_age: timedelta | None, policy: Policy) -> bool:
    """Old L223-1 / arrêté 25 février 2016: a scrub at most 30 days old at the call; a scrub
    made after the call proves nothing about it."""
    if bloctel_age is None:
        return False
    return timedelta(0) <= bloctel_age <= timedelta(days=policy.bloctel_max_age_days)


def situation_for(
    summary: ContactSummary | None,
    *,
    as_of: datetime,
    campaign: Campaign,
    address_valid: bool,
    generic_address: bool,
    policy: Policy,
    personal_domain: bool = False,
    suppressions: Sequence[SuppressionFact] = (),
    call_attempts: Sequence[datetime] = (),
    bloctel_checked_at: datetime | None = None,
) -> Situation:
    """Make every date comparison for one recipient of `campaign`, decided at `as_of`."""
    as_of = utc(as_of, "as_of")
    profile = summary.profile if summary else None
    active = _active_suppressions(suppressions, summary, campaign, as_of)
    state, expires = _retention(summary, as_of, campaign.send_at, policy)
    running, covers = _contracts(summary, campaign, policy)
    phone_like = campaign.channel in PHONE_LIKE
    phone = campaign.channel == "phone"
    timezone = profile.timezone if profile else policy.default_timezone
    bloctel_age = (
        campaign.send_at - utc(bloctel_checked_at, "bloctel_checked_at")
        if (bloctel_checked_at is not None)
        else None
    )
    return Situation(
        profile=profile,
        audience=_audience(profile, campaign, personal_domain),
        address_valid=address_valid,
        generic_address=generic_address,
        suppressions=active - {"bloctel"},
        retention_state=state,
        expires_before_send=expires,
        consent_fresh=_consent_fresh(summary, campaign, policy),
        contract_in_progress=running,
        contract_covers_campaign=covers,
        consent_law_in_force=phone and campaign.send_at >= policy.phone_consent_required_at,
        send_window_ok=not phone_like or phone_call_allowed(campaign.send_at, timezone, policy),
        call_attempts_in_window=_attempts(call_attempts, campaign.send_at, policy) if phone_like else 0,
        bloctel_listed=phone and "bloctel" in active,
        bloctel_fresh=not phone or _fresh(bloctel_age, policy),
    )
