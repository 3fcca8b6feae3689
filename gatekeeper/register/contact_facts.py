"""The discrete facts of contacts being imported, numbered once per distinct combination, with
the retention clock and gate profile the domain core gives each (see ``FactTable``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.domain.facts import ContactFacts
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import compute_clock
from gatekeeper.register import clocks
from gatekeeper.register.contacts import ContactRecord
from gatekeeper.sqlbulk import json_value, ts_value


@dataclass(frozen=True, slots=True)
class Facts:
    """The discrete fields of a contact, parsed and defaulted as ``ContactRecord`` holds them."""

    audience: str
    profession_tags: tuple[str, ...]
    collected_at: datetime
    collected_by: str | None
    source_type: str
    purpose: str
    timezone: str | None

    def profile_part(self) -> tuple[Any, ...]:
        return (
            self.audience,
            self.profession_tags,
            self.collected_by,
            self.source_type,
            self.purpose,
            self.timezone,
        )

    def contact_facts(self) -> ContactFacts:
        """A contact without events, as the domain core reads it."""
        return ContactFacts(
            audience=self.audience,
            collected_at=self.collected_at,
            collected_by=self.collected_by or "",
            source_type=self.source_type,
            purpose=self.purpose,
            timezone=self.timezone,
            profession_tags=frozenset(self.profession_tags),
        )


class FactTable:
    """Distinct ``Facts`` numbered from 0, each with its stored clock and profile.

    A contact being imported has no events yet: its gate profile and instants do not depend
    on the collection instant, so the full summary is computed once per profile and only the
    retention clock per distinct ``Facts``. Files whose collection times carry the time of day
    have as many distinct facts as rows; the clock alone costs a fifteenth of a summary.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.ids: dict[Facts, int] = {}
        # The same facts in id order: what a reading process numbered since its last message.
        self.order: list[Facts] = []
        self.profiles: dict[str, dict[str, Any]] = {}  # profile key -> data, for gate_profiles
        self._by_profile: dict[tuple[Any, ...], tuple[str, dict[str, Any] | None]] = {}

    def id_of(self, facts: Facts) -> int:
        found = self.ids.get(facts)
        if found is None:
            found = self.ids[facts] = len(self.ids)
            self.order.append(facts)
        return found

    def rows(self, dialect: str) -> Iterator[tuple[Any, ...]]:
        for facts, fid in self.ids.items():
            yield (fid, *self.columns(facts, dialect))

    def columns(self, facts: Facts, dialect: str) -> tuple[Any, ...]:
        """The contacts columns of ``facts``, in ``FACT_COLUMNS`` order after the id."""
        contact = facts.contact_facts()
        profile_part = facts.profile_part()
        if profile_part not in self._by_profile:
            stored, profile = clocks.stored_summary(contact, self.policy)
            self.profiles[stored.profile_key] = profile
            self._by_profile[profile_part] = (stored.profile_key, stored.instants)
        profile_key, instants = self._by_profile[profile_part]
        clock = compute_clock(contact, self.policy)
        return (
            facts.audience,
            json_value(list(facts.profession_tags) or None),
            ts_value(dialect, facts.collected_at),
            facts.collected_by,
            facts.source_type,
            facts.purpose,
            facts.timezone,
            str(clock.clock),
            ts_value(dialect, clock.anchor_at),
            clock.anchor_kind,
            ts_value(dialect, clock.deadline),
            ts_value(dialect, clock.reconsent_at),
            profile_key,
            json_value(instants),
        )

    def store_profiles(self, session: Session) -> None:
        """After ``rows``: the gate profiles it met, once each."""
        clocks.store_profiles(session, self.profiles)


def facts_of(record: ContactRecord) -> Facts:
    return Facts(
        record.audience,
        tuple(record.profession_tags),
        record.collected_at,
        record.collected_by,
        record.source_type,
        record.purpose,
        record.timezone,
    )
