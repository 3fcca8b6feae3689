"""The gate: one pure decision per (campaign, situation), RULES.md §2 and §3.

Theory of operation
-------------------
`decide` runs `GATE`, an ordered table of small named checks (Mailman's chain of rules).
Each check looks at the campaign, the recipient's `Situation` and the policy and returns the
reason codes it finds (often none). Block codes accumulate: the first one decides, and the
verdict carries every one found, in gate order. An allow code ("basis.*") from a step marked
`final` (generic address, informational purpose) stops the chain there, since the later steps
do not apply to such messages; the lawful-basis step is not final, because the phone channel
checks of step 9 can still block a call that has a basis. A recipient is allowed only when no
step blocked and some step found a basis; a blocked verdict has no basis.

`decide` depends on hashable inputs only and reads no clock: the shell may memoise it with a
dict keyed by situation for one campaign. Dates were compared earlier, by `situation_for`.
Where RULES.md is silent the cautious reading is taken and marked [cautious].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gatekeeper.domain import reasons as r
from gatekeeper.domain.basis import consent_status, lawful_basis, needs_consent
from gatekeeper.domain.facts import BOUGHT_SOURCES, HARVESTED_SOURCES, Campaign
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.situation import PHONE_LIKE, Situation

Check = Callable[[Campaign, Situation, Policy], tuple[str, ...]]
NONE: tuple[str, ...] = ()

# Suppression order inside step 2, most serious first.
_SUPPRESSION_CODES = (
    ("erasure", r.SUPPRESSED_ERASURE),
    ("complaint", r.SUPPRESSED_COMPLAINT),
    ("hard_bounce", r.SUPPRESSED_HARD_BOUNCE),
    ("unsubscribe", r.SUPPRESSED_UNSUBSCRIBE),
    ("manual", r.SUPPRESSED_MANUAL),
)
# RULES.md §2: informational messages still respect hard bounces and complaints; an erased
# person is not written to either (GDPR art. 17) [cautious].
_INFORMATIONAL_SUPPRESSIONS = frozenset({"erasure", "complaint", "hard_bounce"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer; `reasons[0]` decided. `basis` is the allow basis without prefix."""

    decision: str  # "allow" | "block"
    reasons: tuple[str, ...]
    basis: str | None
    policy_id: str
    policy_version: str


Decision = Verdict


def _informational(c: Campaign) -> bool:
    return c.purpose == "informational"


def check_address(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 1: an unusable coordinate (GDPR art. 5(1)(d) accuracy)."""
    return NONE if s.address_valid else (r.ADDRESS_INVALID,)


def check_suppression(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 2: the coordinate is on the suppression list for this channel (GDPR art. 21)."""
    found = s.suppressions & _INFORMATIONAL_SUPPRESSIONS if _informational(c) else s.suppressions
    return tuple(code for reason, code in _SUPPRESSION_CODES if reason in found)


def check_bloctel(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 2, phone before 2026-08-11: Bloctel (old C. conso L223-1), consumers only, unless
    a contract is in progress ("relations contractuelles préexistantes"). The scrub must be
    at most 30 days old, else the number cannot be cleared [cautious]."""
    if c.channel != "phone" or s.consent_law_in_force or _informational(c):
        return NONE
    if s.audience == "b2b" or s.generic_address or s.contract_in_progress:
        return NONE
    if s.bloctel_listed:
        return (r.SUPPRESSED_BLOCTEL,)
    return NONE if s.bloctel_fresh else (r.BLOCTEL_NOT_CHECKED,)


def check_generic_address(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """A legal person's role address: not personal data for CPCE L34-5; allowed unless
    suppressed (step 2 already ran). Final."""
    return (r.BASIS_GENERIC_ADDRESS,) if s.generic_address else NONE


def check_unknown_contact(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 3: not in the register, so no proof of any basis (GDPR art. 5(2), 7(1)).

    Informational messages are not prospecting and need no register proof (RULES.md §2).
    b2b (a business-domain e-mail) and postal are allowed only by the policy setting.
    """
    if s.profile is not None or _informational(c):
        return NONE
    if p.allow_unknown_b2b_postal and (c.channel == "postal" or s.audience == "b2b"):
        return NONE
    return (r.CONTACT_UNKNOWN,)


def check_retention(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 4: past the deadline now or at send time (GDPR art. 5(1)(e), CNIL 2021-131)."""
    if s.profile is None:
        return NONE
    gone = s.retention_state in ("expired", "anonymised") or s.expires_before_send
    return (r.RETENTION_EXPIRED,) if gone else NONE


def check_informational(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Not prospecting: no consent, source or sector rule applies (RULES.md §2). Final."""
    return (r.BASIS_INFORMATIONAL,) if _informational(c) else NONE


def check_source(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 5: harvested data never supports an opt-in channel; bought or rented data only
    with proof naming the sender, which a usable consent naming it also is (CNIL; GDPR
    art. 7(1), 14). Applied to rows of §2 that need consent [cautious: incl. soft opt-in]."""
    prof = s.profile
    if prof is None or not needs_consent(c, s):
        return NONE
    if prof.source_type in HARVESTED_SOURCES:
        return (r.SOURCE_NO_VALID_CONSENT,)
    proven = prof.source_proof_names_sender or consent_status(c, s) == "valid"
    if prof.source_type in BOUGHT_SOURCES and not proven:
        return (r.SOURCE_NO_VALID_CONSENT,)
    return NONE


def check_purpose(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 6: data collected for recruitment, support, ... is not for prospecting (GDPR
    art. 5(1)(b)); a usable consent for the channel is its own basis (GDPR art. 6(4)).
    Charity appeals are held to the same rule as commercial ones [cautious]."""
    prof = s.profile
    if prof is None or prof.purpose in p.compatible_collection_purposes:
        return NONE
    return NONE if consent_status(c, s) == "valid" else (r.PURPOSE_INCOMPATIBLE,)


def check_sector(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 7: C. conso L223-1 (loi 2020-901): no energy-renovation / home-adaptation
    canvassing of consumers by phone; by e-mail/SMS only within a contract in progress
    whose object is the product [cautious]. Automated calls count as phone [cautious];
    an unknown audience counts as a consumer [cautious]."""
    if c.sector not in p.banned_sectors or s.audience == "b2b":
        return NONE
    if c.channel in PHONE_LIKE:
        return (r.SECTOR_BANNED,)
    if c.channel in ("email", "sms") and not s.contract_covers_campaign:
        return (r.SECTOR_BANNED,)
    return NONE


def check_lawful_basis(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 8: the RULES.md §2 table (see basis.py)."""
    code = lawful_basis(c, s, p)
    return NONE if code is None else (code,)


def _consumer_call(c: Campaign, s: Situation) -> bool:
    # D223-9 protects consumers only; an unknown audience is treated as one [cautious].
    return c.channel in PHONE_LIKE and s.audience != "b2b"


def check_call_hours(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 9: D223-9 days and hours in the consumer's time zone, no public holidays."""
    blocked = _consumer_call(c, s) and not s.send_window_ok
    return (r.PHONE_OUTSIDE_HOURS,) if blocked else NONE


def check_call_frequency(c: Campaign, s: Situation, p: Policy) -> tuple[str, ...]:
    """Step 9: D223-9, at most 4 calls or attempts in 30 days: this one would be the 5th."""
    blocked = _consumer_call(c, s) and s.call_attempts_in_window >= p.phone_max_attempts
    return (r.PHONE_TOO_FREQUENT,) if blocked else NONE


@dataclass(frozen=True, slots=True)
class Step:
    """One row of the gate table; `final`: an allow code from this step ends the chain."""

    name: str
    check: Check
    final: bool = False


GATE: tuple[Step, ...] = (
    Step("address", check_address),
    Step("suppression", check_suppression),
    Step("bloctel", check_bloctel),
    Step("generic_address", check_generic_address, final=True),
    Step("unknown_contact", check_unknown_contact),
    Step("retention", check_retention),
    Step("informational", check_informational, final=True),
    Step("source", check_source),
    Step("purpose", check_purpose),
    Step("sector", check_sector),
    Step("lawful_basis", check_lawful_basis),
    Step("call_hours", check_call_hours),
    Step("call_frequency", check_call_frequency),
)


def decide(campaign: Campaign, situation: Situation, policy: Policy) -> Verdict:
    """Run the gate table; pure, so memoisable per campaign by situation."""
    blocks: list[str] = []
    basis: str | None = None
    for step in GATE:
        codes = step.check(campaign, situation, policy)
        for code in codes:
            if code in r.ALLOW_CODES:
                basis = basis or code
            elif code not in blocks:
                blocks.append(code)
        if step.final and codes:
            break
    if blocks or basis is None:
        return Verdict("block", tuple(blocks) or (r.CONSENT_MISSING,), None, policy.id, policy.version)
    return Verdict("allow", (basis,), basis.removeprefix("basis."), policy.id, policy.version)
