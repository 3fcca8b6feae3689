"""French public holidays and the D223-9 calling windows.

Holidays are those of Code du travail L3133-1 for metropolitan France. Alsace-Moselle (Good
Friday, 26 December) and overseas departments (abolition of slavery days) add their own; they
are not listed here, a known limit.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from gatekeeper.domain.errors import FactError
from gatekeeper.domain.facts import utc
from gatekeeper.domain.policy import Policy

# (month, day) of the fixed holidays, Code du travail L3133-1.
_FIXED = ((1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25))
# Days after Easter Sunday: Easter Monday, Ascension Thursday, Whit Monday.
_MOVABLE = (1, 39, 50)


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=256)
def french_holidays(year: int) -> frozenset[date]:
    """The eleven metropolitan public holidays of `year` (Whit Monday included)."""
    easter = easter_sunday(year)
    fixed = {date(year, m, d) for m, d in _FIXED}
    return frozenset(fixed | {easter + timedelta(days=n) for n in _MOVABLE})


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """A ZoneInfo by name; an unknown name is a FactError."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise FactError(f"unknown time zone {name!r}") from exc


def phone_call_allowed(send_at_utc: datetime, timezone: str, policy: Policy) -> bool:
    """D223-9: a consumer may be called Mon-Fri, not on a holiday, 10-13 and 14-20 local.

    Our reading of the boundaries: windows are half-open [start, end), so 10:00:00 and
    14:00:00 are allowed, 12:59:59 and 19:59:59 are allowed, 13:00:00 and 20:00:00 are not
    (a call placed at 20:00 already runs past "20 heures") [cautious].
    """
    local = utc(send_at_utc, "send_at").astimezone(zone(timezone))
    if local.weekday() not in policy.phone_weekdays:
        return False
    if local.date() in french_holidays(local.year):
        return False
    moment = local.time().replace(tzinfo=None)
    return any(start <= moment < end for start, end in policy.phone_windows)
