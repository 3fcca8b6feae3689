"""Step 8 of the gate: the lawful basis, RULES.md §2, one small rule per table row.

Each rule returns one code: a "basis.*" code to allow, or the block code that explains why
no basis exists. Consent statuses: valid, expired (phone), withdrawn, invalid, missing.
"""

from __future__ import annotations

from collections.abc import Callable

from gatekeeper.domain import reasons as r
from gatekeeper.domain.facts import Campaign
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.situation import Situation

Rule = Callable[[Campaign, Situation, Policy], str]

_STATUS_CODES = {
    "expired": r.CONSENT_EXPIRED,
    "withdrawn": r.CONSENT_WITHDRAWN,
    "invalid": r.CONSENT_INVALID,
    "missing": r.CONSENT_MISSING,
}


def consent_status(c: Campaign, s: Situation) -> str:
    """The consent for this channel, sender and partner (GDPR art. 4(11), 7, 21)."""
    prof = s.profile
    if prof is None:
        return "missing"
    if c.channel in prof.objected_channels:
        return "withdrawn"  # an objection stands until a newer explicit consent
    on_channel = prof.consents_on(c.channel)
    if any(k.usable_for(c) for k in on_channel):
        # C. conso L223-1: a phone consent lasts at most its validity [unconfirmed].
        return "valid" if s.consent_fresh else "expired"
    if any(not k.given and k.names(c.sender) for k in on_channel):
        return "withdrawn"
    return "invalid" if any(k.given for k in on_channel) else "missing"


def related_subject(c: Campaign, s: Situation) -> bool:
    """RULES.md §2: topic tags meet profession tags; without tags, the campaign's attestation."""
    tags = s.profile.profession_tags if s.profile else frozenset[str]()
    return bool(c.topic_tags & tags) if tags else c.professional_relevance


def needs_consent(c: Campaign, s: Situation) -> bool:
    """Whether the §2 row for this recipient is opt-in (used by the source check)."""
    if s.audience == "b2b":
        if c.channel == "fax":
            return True
        electronic = c.channel in ("email", "sms", "automated_call")
        return electronic and not c.is_charity and not related_subject(c, s)
    if c.channel in ("email", "sms", "automated_call"):
        return not c.is_charity
    if c.channel == "phone":
        return s.consent_law_in_force
    return c.channel == "fax"


def _opt_out(c: Campaign, s: Situation, p: Policy) -> str:
    """Allowed unless the person objected (GDPR art. 21)."""
    if consent_status(c, s) == "withdrawn":
        return r.CONSENT_WITHDRAWN
    return r.BASIS_CHARITY if c.is_charity else r.BASIS_OPT_OUT


def _opt_in(c: Campaign, s: Situation, p: Policy) -> str:
    """CPCE L34-5: only with a valid consent for this channel and sender."""
    status = consent_status(c, s)
    return r.BASIS_CONSENT if status == "valid" else _STATUS_CODES[status]


def _soft_opt_in(c: Campaign, s: Situation, p: Policy) -> str:
    """CPCE L34-5 al. 4: a client of this very entity, data collected from them (source
    direct, by the sender), analogous products. An account is not a purchase [cautious]."""
    prof = s.profile
    assert prof is not None  # only called for known contacts
    own = [cat for seller, cat in prof.bought if seller == c.sender]
    if not own or prof.collected_by != c.sender or prof.source_type != "direct":
        return r.SOFT_OPT_IN_NOT_CLIENT
    if not any(p.analogous(cat, c.product_category) for cat in own):
        return r.SOFT_OPT_IN_NOT_ANALOGOUS
    return r.BASIS_SOFT_OPT_IN


def _b2c_electronic(c: Campaign, s: Situation, p: Policy) -> str:
    """b2c e-mail/SMS: opt-in, soft opt-in for clients, opt-out for charity."""
    if c.is_charity:
        return _opt_out(c, s, p)
    status = consent_status(c, s)
    if status in ("valid", "withdrawn"):
        return _opt_in(c, s, p)
    soft = _soft_opt_in(c, s, p)
    if soft == r.BASIS_SOFT_OPT_IN:
        return soft
    if status == "invalid":
        return r.CONSENT_INVALID
    if soft == r.SOFT_OPT_IN_NOT_ANALOGOUS:
        return soft
    client_like = bool(s.profile and (s.profile.bought or s.profile.has_account))
    return r.SOFT_OPT_IN_NOT_CLIENT if client_like else r.CONSENT_MISSING


def _b2c_automated_call(c: Campaign, s: Situation, p: Policy) -> str:
    """CPCE L34-5: opt-in, no client exception [cautious]; charity: opt-out."""
    return _opt_out(c, s, p) if c.is_charity else _opt_in(c, s, p)


def _b2c_phone(c: Campaign, s: Situation, p: Policy) -> str:
    """C. conso L223-1: opt-in from 2026-08-11 save a contract in progress about the call's
    object; before, opt-out (Bloctel is checked in step 2)."""
    status = consent_status(c, s)
    if status == "withdrawn" or not s.consent_law_in_force:
        # Before 2026-08-11 the contract only matters as the Bloctel exception (step 2).
        bloctel_exception = s.bloctel_listed and s.contract_in_progress
        if status != "withdrawn" and bloctel_exception:
            return r.BASIS_CONTRACT_IN_PROGRESS
        return _opt_out(c, s, p)
    if status == "valid":
        return r.BASIS_CONSENT
    if s.contract_covers_campaign:
        return r.BASIS_CONTRACT_IN_PROGRESS
    return _STATUS_CODES[status]


def _b2b_electronic(c: Campaign, s: Situation, p: Policy) -> str:
    """CPCE L34-5 as read by the CNIL: opt-out if the subject is the person's profession."""
    status = consent_status(c, s)
    if status in ("valid", "withdrawn"):
        return _opt_in(c, s, p)
    if c.is_charity:
        return r.BASIS_CHARITY
    if related_subject(c, s):
        return r.BASIS_B2B_OPT_OUT
    return r.CONSENT_INVALID if status == "invalid" else r.B2B_UNRELATED_SUBJECT


_B2C: dict[str, Rule] = {
    "email": _b2c_electronic,
    "sms": _b2c_electronic,
    "automated_call": _b2c_automated_call,
    "fax": _opt_in,  # CPCE L34-5, no charity exception stated [cautious]
    "phone": _b2c_phone,
    "postal": _opt_out,  # CNIL prospection postale: opt-out
}
_B2B: dict[str, Rule] = {
    "email": _b2b_electronic,
    "sms": _b2b_electronic,
    "automated_call": _b2b_electronic,
    "fax": _opt_in,  # natural person at work: opt-in [cautious]
    "phone": _opt_out,  # D223-9 / L223-1 protect consumers only
    "postal": _opt_out,
}


def _unknown(c: Campaign, s: Situation, p: Policy) -> str | None:
    """Only reached when the policy allows unknown b2b / postal recipients (step 3)."""
    if not p.allow_unknown_b2b_postal:
        return None  # step 3 already blocked with contact.unknown
    if c.channel == "postal":
        return r.BASIS_CHARITY if c.is_charity else r.BASIS_OPT_OUT
    if s.audience == "b2b":
        return r.BASIS_B2B_OPT_OUT if related_subject(c, s) else r.B2B_UNRELATED_SUBJECT
    return None


def lawful_basis(c: Campaign, s: Situation, p: Policy) -> str | None:
    """The §2 row for this audience and channel; None when step 3 already decided."""
    if s.profile is None:
        return _unknown(c, s, p)
    table = _B2B if s.audience == "b2b" else _B2C
    return table[c.channel](c, s, p)
