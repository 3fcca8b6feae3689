"""Recipients as sent (an address string, or an object naming e-mail, phone or external_id)
to normalised coordinates. An invalid coordinate is not an error of the call: it gets the
verdict ``address.invalid`` and the rest of the list is still decided."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone

PHONE_CHANNELS = frozenset({"sms", "phone", "automated_call", "fax"})


class Recipient(NamedTuple):
    """One recipient as sent (a named tuple: a list of a million builds a million of them)."""

    row: int
    kind: str  # email | phone | external_id
    value: str | None  # normalised; None when invalid
    raw: str


def coordinate_kind(channel: str) -> str:
    return "phone" if channel in PHONE_CHANNELS else "email"


def parse_value(row: int, kind: str, raw: str, region: str) -> Recipient:
    text = raw.strip()
    try:
        if kind == "email":
            return Recipient(row, kind, normalise_email(text), raw)
        if kind == "phone":
            return Recipient(row, kind, normalise_phone(text, region), raw)
        # No stored id holds a NUL (and PostgreSQL could not even compare one): invalid.
        return Recipient(row, kind, text if text and "\x00" not in text else None, raw)
    except CoordinateError:
        return Recipient(row, kind, None, raw)


def parse_recipient(row: int, item: Any, channel: str, region: str) -> Recipient:
    if isinstance(item, str):
        kind = (
            "email"
            if "@" in item
            else "phone"
            if channel in PHONE_CHANNELS or item.strip()[:1] in "+0"
            else "email"
        )
        return parse_value(row, kind, item, region)
    if isinstance(item, Mapping):
        for kind in ("external_id", "email", "phone"):
            if isinstance(item.get(kind), str | int) and str(item[kind]).strip():
                return parse_value(row, kind, str(item[kind]), region)
    return Recipient(row, "email", None, str(item))
