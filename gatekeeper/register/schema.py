"""Validation of register input (API.md "Register"), shared by the JSON API and CSV imports.

Each record kind is a table of fields → parser; a record yields either a clean value or a list
of problems naming the field, so a bulk call can report every bad row at once (at most
``MAX_ERRORS``) and store nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone
from gatekeeper.security import KeyedHasher
from gatekeeper.timeparse import InstantError, isoformat, parse_instant

MAX_ERRORS = 100
CHANNELS = ("email", "sms", "automated_call", "fax", "phone", "postal")
SOURCE_TYPES = ("direct", "purchase", "event", "broker", "partner", "scraped", "public_directory")
PURPOSES = ("marketing", "customer_service", "recruitment", "other")
SUPPRESSION_REASONS = ("unsubscribe", "hard_bounce", "complaint", "manual", "bloctel", "erasure")


class FieldError(ValueError):
    pass


Parser = Callable[[Any], Any]


def text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise FieldError("expected text")
    out = str(value).strip()
    if len(out) > 2000:
        raise FieldError("text longer than 2000 characters")
    if "\x00" in out:
        # PostgreSQL cannot store a NUL character in text; say so instead of failing the batch.
        raise FieldError("text contains a NUL character")
    return out or None


def instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_instant(value)
    except InstantError as exc:
        raise FieldError(str(exc)) from exc


_TRUE = {"true", "1", "yes", "oui", "y", "o"}
_FALSE = {"false", "0", "no", "non", "n", ""}


def boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FieldError("expected true or false")


def number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError("expected a number")
    try:
        return float(str(value).replace(",", ".")) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise FieldError("expected a number") from exc


def str_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise FieldError("expected a list of text (or ';'-joined text)")
    return [i.strip() for i in items if i.strip()]


def one_of(*allowed: str) -> Parser:
    def parse(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if value not in allowed:
            raise FieldError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return str(value)

    return parse


def channels(value: Any) -> list[str]:
    if value in ("all", ["all"]):
        return ["all"]
    items = str_list(value)
    bad = [c for c in items if c not in CHANNELS]
    if bad or not items:
        raise FieldError(f"channels must be 'all' or a list of {', '.join(CHANNELS)}")
    return sorted(set(items))


@dataclass(frozen=True, slots=True)
class Spec:
    parse: Parser
    required: bool = False


@dataclass
class Problems:
    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, row: int, field_name: str | None, problem: str) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append({"row": row, "field": field_name, "problem": problem})

    def __bool__(self) -> bool:
        return self.total > 0


def apply_specs(
    raw: Mapping[str, Any], specs: Mapping[str, Spec], row: int, problems: Problems
) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    ok = True
    for name, spec in specs.items():
        value = raw.get(name)
        if value is None or value == "":
            # The common case in CSV files: an empty cell. No parser call needed.
            if spec.required:
                problems.add(row, name, "is required")
                ok = False
            out[name] = None
            continue
        try:
            value = spec.parse(value)
        except FieldError as exc:
            problems.add(row, name, str(exc))
            ok = False
            continue
        if spec.required and value in (None, ""):
            problems.add(row, name, "is required")
            ok = False
        out[name] = value
    return out if ok else None


def parse_coordinates(
    raw: Mapping[str, Any], row: int, problems: Problems, region: str
) -> tuple[str | None, str | None, bool]:
    email = phone = None
    ok = True
    if raw.get("email") not in (None, ""):
        try:
            email = normalise_email(str(raw["email"]))
        except CoordinateError as exc:
            problems.add(row, "email", f"invalid e-mail: {exc}")
            ok = False
    if raw.get("phone") not in (None, ""):
        try:
            phone = normalise_phone(str(raw["phone"]), region)
        except CoordinateError as exc:
            problems.add(row, "phone", f"invalid phone: {exc}")
            ok = False
    return email, phone, ok


def dedupe_key(*parts: Any, hasher: KeyedHasher | None = None) -> str:
    """A stable fingerprint of a fact, so the same fact sent twice is stored once; keyed
    (HMAC) whenever the parts may hold a coordinate."""
    canonical = json.dumps(parts, sort_keys=True, default=_json_default, separators=(",", ":"))
    if hasher is not None:
        return hasher.fingerprint(canonical)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: isoformat(v) if isinstance(v, datetime) else v for k, v in data.items()}
