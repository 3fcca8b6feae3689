"""Facts about a contact and a campaign, as frozen dataclasses (mirrors API.md "Register").

The shell reads rows and events from storage and builds these; the core never does I/O.
Every datetime must be timezone-aware; constructors normalise it to UTC and reject naive ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from gatekeeper.domain.errors import FactError


class Channel(StrEnum):
    """Contact channels; SMS/MMS count as e-mail for CPCE L34-5."""

    EMAIL = "email"
    SMS = "sms"
    AUTOMATED_CALL = "automated_call"
    FAX = "fax"
    PHONE = "phone"
    POSTAL = "postal"


class Purpose(StrEnum):
    """What a campaign is for (RULES.md §1)."""

    COMMERCIAL = "commercial"
    INFORMATIONAL = "informational"
    CHARITY = "charity"


class Audience(StrEnum):
    """b2c: a consumer; b2b: a natural person at professional coordinates."""

    B2C = "b2c"
    B2B = "b2b"


CHANNELS = frozenset(c.value for c in Channel)
ALL_CHANNELS = CHANNELS
PURPOSES = frozenset(p.value for p in Purpose)
AUDIENCES = frozenset(a.value for a in Audience)
SOURCE_TYPES = frozenset({"direct", "purchase", "event", "broker", "partner", "scraped", "public_directory"})
# Third-party data: usable on opt-in channels only with proof naming the sender (CNIL).
BOUGHT_SOURCES = frozenset({"broker", "purchase", "partner"})
# Never a basis for an opt-in channel (CNIL, GDPR art. 14: the person was never asked).
HARVESTED_SOURCES = frozenset({"scraped", "public_directory"})
# Contacts "coming from the person" that restart a prospect clock (CNIL délibération 2021-131).
INTEREST_KINDS = frozenset({"click", "download", "reply", "inbound_request", "demo"})
SUPPRESSION_REASONS = frozenset({"unsubscribe", "hard_bounce", "complaint", "erasure", "manual", "bloctel"})


def utc(value: datetime, name: str) -> datetime:
    """Return `value` in UTC; a naive datetime is a FactError (no guessing of zones)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise FactError(f"{name} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def _check(value: str, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise FactError(f"{name}={value!r} is not one of {sorted(allowed)}")


def _channels(values: frozenset[str], name: str) -> None:
    for value in values:
        _check(value, CHANNELS, name)


@dataclass(frozen=True, slots=True)
class Purchase:
    """An actual purchase (an account creation is not one: RULES.md §1 [cautious])."""

    occurred_at: datetime
    product_category: str
    seller: str
    warranty_until: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "occurred_at", utc(self.occurred_at, "purchase.occurred_at"))
        if self.warranty_until is not None:
            object.__setattr__(self, "warranty_until", utc(self.warranty_until, "purchase.warranty_until"))


@dataclass(frozen=True, slots=True)
class Contract:
    """A subscription, warranty or service contract; `ends_at=None` means it is running."""

    kind: str
    starts_at: datetime
    ends_at: datetime | None
    product_category: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts_at", utc(self.starts_at, "contract.starts_at"))
        if self.ends_at is not None:
            object.__setattr__(self, "ends_at", utc(self.ends_at, "contract.ends_at"))


@dataclass(frozen=True, slots=True)
class ConsentFact:
    """A consent given (given=True) or refused/withdrawn (given=False) for one channel."""

    channel: str
    given: bool
    occurred_at: datetime
    method: str = "checkbox"
    prechecked: bool = False
    bundled_with_terms: bool = False
    sender: str = ""
    partners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.channel, CHANNELS, "consent.channel")
        object.__setattr__(self, "occurred_at", utc(self.occurred_at, "consent.occurred_at"))

    @property
    def explicit(self) -> bool:
        """GDPR art. 4(11), 7: a clear affirmative act, not pre-ticked, not bundled."""
        return self.given and not self.prechecked and not self.bundled_with_terms


@dataclass(frozen=True, slots=True)
class Objection:
    """An objection to prospecting (GDPR art. 21); `channels` is ALL_CHANNELS for "all"."""

    channels: frozenset[str]
    occurred_at: datetime
    via: str = "form"

    def __post_init__(self) -> None:
        _channels(self.channels, "objection.channels")
        object.__setattr__(self, "occurred_at", utc(self.occurred_at, "objection.occurred_at"))


@dataclass(frozen=True, slots=True)
class InterestFact:
    """A contact coming from the person; `counts=False` for link-scanner clicks."""

    kind: str
    occurred_at: datetime
    counts: bool = True

    def __post_init__(self) -> None:
        _check(self.kind, INTEREST_KINDS, "interest.kind")
        object.__setattr__(self, "occurred_at", utc(self.occurred_at, "interest.occurred_at"))


@dataclass(frozen=True, slots=True)
class SuppressionFact:
    """A suppression-list entry matched on the coordinate (keyed hash, done by the shell)."""

    reason: str
    channels: frozenset[str]
    occurred_at: datetime

    def __post_init__(self) -> None:
        _check(self.reason, SUPPRESSION_REASONS, "suppression.reason")
        _channels(self.channels, "suppression.channels")
        object.__setattr__(self, "occurred_at", utc(self.occurred_at, "suppression.occurred_at"))


@dataclass(frozen=True, slots=True)
class ContactFacts:
    """Everything the register knows about one contact, in no particular order.

    `b2b_confirmed` is the explicit flag without which a personal mailbox domain is never
    treated as b2b (RULES.md §1). `opens` are kept for completeness: they never count.
    """

    audience: str
    collected_at: datetime
    collected_by: str
    source_type: str = "direct"
    source_proof_names_sender: bool = False
    purpose: str = "marketing"
    timezone: str | None = None
    profession_tags: frozenset[str] = frozenset()
    purchases: tuple[Purchase, ...] = ()
    contracts: tuple[Contract, ...] = ()
    consents: tuple[ConsentFact, ...] = ()
    objections: tuple[Objection, ...] = ()
    interests: tuple[InterestFact, ...] = ()
    accounts_created: tuple[datetime, ...] = ()
    opens: tuple[datetime, ...] = ()
    b2b_confirmed: bool = False
    anonymised: bool = False

    def __post_init__(self) -> None:
        _check(self.audience, AUDIENCES, "contact.audience")
        _check(self.source_type, SOURCE_TYPES, "contact.source.type")
        object.__setattr__(self, "collected_at", utc(self.collected_at, "contact.collected_at"))


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign as posted to the gate; `send_at` is when the messages go out."""

    channel: str
    purpose: str
    sender: str
    send_at: datetime
    sender_nonprofit: bool = False
    product_category: str | None = None
    topic_tags: frozenset[str] = frozenset()
    professional_relevance: bool = False
    partner: str | None = None
    sector: str | None = None

    def __post_init__(self) -> None:
        _check(self.channel, CHANNELS, "campaign.channel")
        _check(self.purpose, PURPOSES, "campaign.purpose")
        object.__setattr__(self, "send_at", utc(self.send_at, "campaign.send_at"))

    @property
    def is_charity(self) -> bool:
        """A charity appeal only counts as one from a non-profit sender [cautious]."""
        return self.purpose == Purpose.CHARITY and self.sender_nonprofit
