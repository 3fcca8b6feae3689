"""The policy: every knob RULES.md marks as a *setting*, as one frozen value.

The shell reads `config/policies/<id>.toml` (or any mapping) and calls `policy_from_mapping`;
the core never reads files. Durations counted in years are added calendar-wise (a 3-year
clock started on 2025-06-10 ends on 2028-06-10; 29 February falls back to 28 February), which
is how the texts count ("3 ans"), rather than 1095 days that drift with leap years.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatekeeper.domain.errors import PolicyError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Policy:
    """One version of the rules; every verdict names `id` and `version`."""

    id: str
    version: str
    default_timezone: str
    # Retention (CNIL délibération 2021-131; GDPR art. 5(1)(e)).
    prospect_retention_years: int
    client_retention_years: int
    b2b_same_clock: bool
    b2b_retention_years: int
    reconsent_lead_days: int
    reconsent_reminder_days: int
    suppression_min_retention_years: int
    # Phone canvassing (C. conso L223-1, D223-9).
    phone_windows: tuple[tuple[time, time], ...]
    phone_weekdays: frozenset[int]
    phone_max_attempts: int
    phone_attempt_window_days: int
    phone_consent_validity_days: int
    phone_consent_required_from: date
    bloctel_max_age_days: int
    # Audience and sources (CPCE L34-5; GDPR art. 6(4)).
    personal_mailbox_domains: frozenset[str]
    generic_local_parts: frozenset[str]
    allow_unknown_b2b_postal: bool
    compatible_collection_purposes: frozenset[str]
    banned_sectors: frozenset[str]
    product_families: tuple[tuple[str, frozenset[str]], ...]
    # Link scanners (RULES.md §4: their clicks never restart a clock).
    scanner_user_agent_substrings: tuple[str, ...]
    click_grace_seconds: int
    _family_of: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {cat: fam for fam, cats in self.product_families for cat in cats}
        object.__setattr__(self, "_family_of", index)

    def family_of(self, category: str) -> str | None:
        """The product family of `category`, None when the table does not list it."""
        return self._family_of.get(category)

    def analogous(self, bought: str, offered: str | None) -> bool:
        """CPCE L34-5 al. 4 "produits ou services analogues": same configured family.

        An unlisted category is analogous only to itself; no category is analogous to nothing.
        """
        if offered is None:
            return False
        if bought == offered:
            return True
        family = self._family_of.get(bought)
        return family is not None and family == self._family_of.get(offered)

    @property
    def phone_consent_required_at(self) -> datetime:
        """L223-1 (loi 2025-594 art. 13) in force at 00:00 French time on its date."""
        start = self.phone_consent_required_from
        return datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(self.default_timezone))


def policy_from_toml(text: str) -> Policy:
    """Parse TOML text already read by the shell (no file access here)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy is not valid TOML: {exc}") from exc
    return policy_from_mapping(data)


class _Reader:
    """Reads one section of the mapping, naming the dotted key in every error."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        if not isinstance(data, Mapping):
            raise PolicyError(f"{prefix.rstrip('.') or 'policy'}: expected a table")
        self.data, self.prefix, self.seen = data, prefix, set[str]()

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            raise PolicyError(f"{self.prefix}{key}: missing")
        return self.data[key]

    def fail(self, key: str, expected: str) -> PolicyError:
        return PolicyError(f"{self.prefix}{key}: expected {expected}, got {self.data[key]!r}")

    def section(self, key: str) -> _Reader:
        return _Reader(self.raw(key), f"{self.prefix}{key}.")

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def count(self, key: str, minimum: int = 1) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "a list of non-empty strings")
        return tuple(value)

    def lowered(self, key: str) -> frozenset[str]:
        return frozenset(v.strip().lower() for v in self.texts(key))

    def day(self, key: str) -> date:
        value = self.raw(key)
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            return date.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.fail(key, "a date YYYY-MM-DD") from None

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise PolicyError(f"{self.prefix}{extra[0]}: unknown key")


def _zone(reader: _Reader, key: str) -> str:
    name = reader.text(key)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail(key, "an IANA time zone") from None
    return name


def _windows(reader: _Reader, key: str) -> tuple[tuple[time, time], ...]:
    value = reader.raw(key)
    try:
        windows = tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in value)
    except (TypeError, ValueError):
        raise reader.fail(key, 'a list of ["HH:MM", "HH:MM"] pairs') from None
    ordered = all(a < b for a, b in windows)
    apart = all(windows[i][1] <= windows[i + 1][0] for i in range(len(windows) - 1))
    if not windows or not ordered or not apart:
        raise reader.fail(key, "non-empty, ordered, non-overlapping windows")
    return windows


def _weekdays(reader: _Reader, key: str) -> frozenset[int]:
    names = reader.texts(key)
    if not set(names) <= set(WEEKDAYS):
        raise reader.fail(key, f"weekday names among {list(WEEKDAYS)}")
    return frozenset(WEEKDAYS.index(n) for n in names)


def _families(reader: _Reader) -> tuple[tuple[str, frozenset[str]], ...]:
    families = tuple(sorted((name, frozenset(reader.texts(name))) for name in reader.data))
    seen: set[str] = set()
    for name, cats in families:
        if seen & cats:
            raise PolicyError(f"{reader.prefix}{name}: a category belongs to two families")
        seen |= cats
    return families


def policy_from_mapping(data: Mapping[str, Any]) -> Policy:
    """Validate a mapping (parsed TOML or JSON) into a Policy; PolicyError names the bad key."""
    top = _Reader(data)
    ret, phone, aud, interest = (top.section(k) for k in ("retention", "phone", "audience", "interest"))
    policy = Policy(
        id=top.text("id"),
        version=top.text("version"),
        default_timezone=_zone(top, "default_timezone"),
        prospect_retention_years=ret.count("prospect_years"),
        client_retention_years=ret.count("client_years"),
        b2b_same_clock=ret.flag("b2b_same_clock"),
        b2b_retention_years=ret.count("b2b_years"),
        reconsent_lead_days=ret.count("reconsent_lead_days"),
        reconsent_reminder_days=ret.count("reconsent_reminder_days"),
        suppression_min_retention_years=ret.count("suppression_min_years"),
        phone_windows=_windows(phone, "windows"),
        phone_weekdays=_weekdays(phone, "weekdays"),
        phone_max_attempts=phone.count("max_attempts"),
        phone_attempt_window_days=phone.count("attempt_window_days"),
        phone_consent_validity_days=phone.count("consent_validity_days"),
        phone_consent_required_from=phone.day("consent_required_from"),
        bloctel_max_age_days=phone.count("bloctel_max_age_days"),
        personal_mailbox_domains=aud.lowered("personal_mailbox_domains"),
        generic_local_parts=aud.lowered("generic_local_parts"),
        allow_unknown_b2b_postal=aud.flag("allow_unknown_b2b_postal"),
        compatible_collection_purposes=aud.lowered("compatible_collection_purposes"),
        banned_sectors=frozenset(top.texts("banned_sectors")),
        product_families=_families(top.section("product_families")),
        scanner_user_agent_substrings=tuple(
            s.lower() for s in interest.texts("scanner_user_agent_substrings")
        ),
        click_grace_seconds=interest.count("click_grace_seconds", minimum=0),
    )
    if policy.reconsent_reminder_days >= policy.reconsent_lead_days:
        raise PolicyError("retention.reconsent_reminder_days: must be below reconsent_lead_days")
    for reader in (top, ret, phone, aud, interest):
        reader.done()
    return policy
