"""Date-free summaries of contacts, shared by many contacts, for the bulk gate path.

`summarise` folds a contact's facts once into a `ContactSummary`: a hashable, date-free
`GateProfile` (many contacts share one, so the shell may store them deduplicated), the
retention clock, and the few instants the gate compares with `as_of` / `send_at`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gatekeeper.domain.calendar import zone
from gatekeeper.domain.facts import CHANNELS, Campaign, ConsentFact, ContactFacts
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import RetentionClock, compute_clock, reconsent_refused


@dataclass(frozen=True, slots=True)
class ChannelConsent:
    """The latest word of one sender's consent on one channel, after objections."""

    sender: str
    given: bool
    prechecked: bool = False
    bundled_with_terms: bool = False
    partners: frozenset[str] = frozenset()

    def names(self, sender: str) -> bool:
        """The consent names this sender, directly or as a listed partner (CPCE L34-5)."""
        return self.sender == sender or sender in self.partners

    def usable_for(self, campaign: Campaign) -> bool:
        """Given, freely and specifically (GDPR art. 4(11), 7): not pre-ticked, not bundled,
        naming the sender, and naming the partner of a partner campaign."""
        return (
            self.given
            and not self.prechecked
            and not self.bundled_with_terms
            and self.names(campaign.sender)
            and (campaign.partner is None or campaign.partner in self.partners)
        )


@dataclass(frozen=True, slots=True)
class GateProfile:
    """Everything date-free the gate needs about a contact. Hashable; its hash is cached."""

    audience: str
    source_type: str
    source_proof_names_sender: bool
    purpose: str
    collected_by: str
    timezone: str
    profession_tags: frozenset[str] = frozenset()
    consents: frozenset[tuple[str, ChannelConsent]] = frozenset()
    objected_channels: frozenset[str] = frozenset()
    bought: frozenset[tuple[str, str]] = frozenset()  # (selling entity, product category)
    has_account: bool = False
    b2b_confirmed: bool = False
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = tuple(getattr(self, f) for f in _PROFILE_FIELDS)
        object.__setattr__(self, "_hash", hash(values))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # Memo lookups compare profiles on every hit: identity and cached hash first.
        if self is other:
            return True
        if not isinstance(other, GateProfile) or self._hash != other._hash:
            return False
        mine = tuple(getattr(self, f) for f in _PROFILE_FIELDS)
        return mine == tuple(getattr(other, f) for f in _PROFILE_FIELDS)

    def consents_on(self, channel: str) -> tuple[ChannelConsent, ...]:
        return tuple(k for ch, k in self.consents if ch == channel)


_PROFILE_FIELDS = tuple(f for f in GateProfile.__dataclass_fields__ if f != "_hash")


@dataclass(frozen=True, slots=True)
class GateInstants:
    """The datetimes behind a profile, for the date comparisons done by `situation_for`."""

    consents: tuple[tuple[str, ChannelConsent, datetime], ...] = ()  # (channel, consent, at)
    contracts: tuple[tuple[str, datetime, datetime | None], ...] = ()  # (category, start, end)


@dataclass(frozen=True, slots=True)
class ContactSummary:
    """What `summarise` returns: the shared profile plus this contact's own dates."""

    profile: GateProfile
    clock: RetentionClock
    instants: GateInstants
    anonymised: bool = False
    reconsent_refused: bool = False


def _sort_key(c: ConsentFact) -> tuple[datetime, bool, bool, bool, tuple[str, ...]]:
    # Same instant: a refusal beats a consent, a flawed consent beats a clean one [cautious].
    return (c.occurred_at, not c.given, c.prechecked, c.bundled_with_terms, c.partners)


def _latest_objection(facts: ContactFacts, channel: str) -> datetime | None:
    times = [o.occurred_at for o in facts.objections if channel in o.channels]
    return max(times) if times else None


def _channel_consents(
    facts: ContactFacts, channel: str
) -> tuple[list[tuple[ChannelConsent, datetime]], bool]:
    """Latest consent per sender newer than the latest objection; and 'still objected'.

    GDPR art. 21 / RULES.md §3.2: an objection blocks until a *newer, explicit* consent for
    that channel; consents older than (or as old as) the objection are superseded by it.
    """
    objected_at = _latest_objection(facts, channel)
    latest: dict[str, ConsentFact] = {}
    for c in sorted((c for c in facts.consents if c.channel == channel), key=_sort_key):
        latest[c.sender] = c
    kept = [c for c in latest.values() if objected_at is None or c.occurred_at > objected_at]
    objected = objected_at is not None and not any(c.explicit for c in kept)
    return [(_consent(c), c.occurred_at) for c in kept], objected


def _consent(c: ConsentFact) -> ChannelConsent:
    return ChannelConsent(c.sender, c.given, c.prechecked, c.bundled_with_terms, frozenset(c.partners))


def _bought(facts: ContactFacts) -> Iterable[tuple[str, str]]:
    yield from ((p.seller, p.product_category) for p in facts.purchases)
    # A contract event names no seller: it is with the entity that holds the register entry.
    yield from ((facts.collected_by, k.product_category) for k in facts.contracts)


def summarise(facts: ContactFacts, policy: Policy) -> ContactSummary:
    """Fold one contact's facts into its profile, retention clock and instants."""
    timezone = facts.timezone or policy.default_timezone
    zone(timezone)  # an unknown zone is a FactError now, not at send time
    consents: list[tuple[str, ChannelConsent, datetime]] = []
    objected: set[str] = set()
    for channel in sorted(CHANNELS):
        kept, still_objected = _channel_consents(facts, channel)
        consents += [(channel, k, at) for k, at in kept]
        if still_objected:
            objected.add(channel)
    profile = GateProfile(
        audience=facts.audience,
        source_type=facts.source_type,
        source_proof_names_sender=facts.source_proof_names_sender,
        purpose=facts.purpose,
        collected_by=facts.collected_by,
        timezone=timezone,
        profession_tags=facts.profession_tags,
        consents=frozenset((ch, k) for ch, k, _ in consents),
        objected_channels=frozenset(objected),
        bought=frozenset(_bought(facts)),
        has_account=bool(facts.accounts_created),
        b2b_confirmed=facts.b2b_confirmed,
    )
    contracts = tuple(
        sorted(
            ((k.product_category, k.starts_at, k.ends_at) for k in facts.contracts),
            key=lambda k: (k[0], k[1], k[2] is None, k[2] or k[1]),
        )
    )
    clock = compute_clock(facts, policy)
    instants = GateInstants(tuple(sorted(consents, key=lambda e: (e[0], e[2], e[1].sender))), contracts)
    return ContactSummary(profile, clock, instants, facts.anonymised, reconsent_refused(facts, clock))


def classify_email(normalised_email: str, policy: Policy) -> str:
    """ "personal_domain" | "generic" | "other" from the address alone (RULES.md §1).

    A personal mailbox domain wins over a generic local part: contact@gmail.com is a
    person's mailbox, not a legal person's role address [cautious]. "+tags" are ignored.
    """
    local, _, domain = normalised_email.strip().lower().rpartition("@")
    if domain in policy.personal_mailbox_domains:
        return "personal_domain"
    if local.split("+", 1)[0] in policy.generic_local_parts:
        return "generic"
    return "other"
