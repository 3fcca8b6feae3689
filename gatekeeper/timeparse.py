"""RFC 3339 instants in, aware UTC out. A date alone means 00:00 Europe/Paris (API.md)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InstantError(ValueError):
    pass


def parse_instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    if not isinstance(value, str) or not value.strip():
        raise InstantError("expected an RFC 3339 date or date-time")
    return _parse_text(value.strip())


@lru_cache(maxsize=65536)
def _parse_text(text: str) -> datetime:
    # Imports repeat the same dates thousands of times: parse each spelling once.
    try:
        if _DATE_ONLY.match(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), PARIS).astimezone(UTC)
        return _aware(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError as exc:
        raise InstantError(f"not a valid date or date-time: {text!r}") from exc


def _aware(value: datetime) -> datetime:
    # A date-time without an offset is read in Paris time, like a bare date.
    if value.tzinfo is None:
        value = value.replace(tzinfo=PARIS)
    return value.astimezone(UTC)


def isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")
