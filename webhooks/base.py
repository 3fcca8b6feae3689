"""Shared shapes and helpers for the emailing-platform webhook adapters.

Theory of operation
-------------------
The Flask view (the shell) turns an HTTP request into an ``InboundRequest`` and calls, in order:

1. ``adapter.verify(request, credentials, now=..., guard=...)`` on the raw bytes. It raises
   ``AuthenticationError`` (``ReplayError`` for a reused one-time token), ``PayloadError`` when
   the body is too broken to even find the signature, or ``UpstreamError`` when verification
   needs something we could not reach right now (the SNS signing certificate).
2. ``adapter.parse(request)`` into a ``ParseResult``: one ``NormalizedEvent`` per provider event
   (per recipient for SES), each with a ``dedupe_key`` that is stable across redeliveries, since
   providers retry whole batches and idempotency is per event.
3. ``adapter.status_for(error_or_None, transient=...)`` for the HTTP status that makes the
   provider retry exactly when a retry can help.

Adapters do no I/O of their own except the SES certificate fetch, which is injectable. They
never read the clock: ``now`` is an argument. The ``ReplayGuard`` is the shell's (a database
table); it should share the transaction that stores the events, so a request that fails after
verification does not burn its token for the provider's retry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple, Protocol

Kind = Literal[
    "click", "open", "unsubscribe", "hard_bounce", "soft_bounce", "complaint", "delivered", "other"
]

CONTACT_KEY = "gk_contact"
CAMPAIGN_KEY = "gk_campaign"
MAX_DEDUPE_KEY_LENGTH = 255
# Above this an epoch value cannot be seconds (it would be after the year 5000): milliseconds.
_MILLISECONDS_THRESHOLD = 100_000_000_000
_INTEGER = re.compile(r"\s*\+?(\d{1,18})\s*")
_PAIR_SEPARATORS = re.compile(r"[&;,|\s]+")


class WebhookError(Exception):
    """Base class of everything an adapter raises on purpose."""


class AuthenticationError(WebhookError):
    """The request is not provably from the provider (signature or credentials wrong, none set)."""


class ReplayError(AuthenticationError):
    """A correctly signed request whose one-time token was already used."""


class PayloadError(WebhookError):
    """The body is malformed: permanent, retrying the same bytes cannot help."""


class UpstreamError(WebhookError):
    """Verification needs something unreachable right now (SNS certificate): worth a retry."""


@dataclass(frozen=True, slots=True)
class InboundRequest:
    method: str
    url: str  # the full external URL as configured at the provider (Mandrill signs it)
    headers: Mapping[str, str]
    body: bytes
    remote_addr: str | None = None

    def header(self, name: str) -> str | None:
        """Header value by case-insensitive name, or None."""
        found = self.headers.get(name)  # as spelt: the usual case, one look-up
        if found is not None:
            return found
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


class NormalizedEvent(NamedTuple):
    """One provider event in our terms. A named tuple, immutable like a frozen dataclass but
    built several times faster: a SendGrid batch makes 500 of them per request."""

    provider: str
    kind: Kind
    provider_event: str
    dedupe_key: str
    occurred_at: datetime
    email: str | None
    contact_id: int | None
    campaign_id: int | None
    url: str | None
    user_agent: str | None
    raw: Mapping[str, Any]
    # The event's own JSON text when the adapter has it at hand (a slice of the body): stored
    # as is, it spares encoding ``raw`` again.
    raw_json: str | None = None


@dataclass(frozen=True, slots=True)
class ParseResult:
    events: list[NormalizedEvent] = field(default_factory=list)
    subscribe_url: str | None = None  # SNS SubscriptionConfirmation: the shell GETs it


class ReplayGuard(Protocol):
    def seen(self, provider: str, token: str, *, now: datetime) -> bool:
        """True if ``token`` was already used; otherwise record it and return False."""
        ...


class Adapter(Protocol):
    name: str

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None: ...

    def parse(self, request: InboundRequest) -> ParseResult: ...

    def status_for(self, error: WebhookError | None, *, transient: bool = False) -> int: ...


class BaseAdapter:
    """Default retry semantics: 2xx stops, 4xx is a verdict, 503 asks for a retry."""

    name = "base"
    payload_status = 400
    replay_status = 401

    def status_for(self, error: WebhookError | None, *, transient: bool = False) -> int:
        if transient or isinstance(error, UpstreamError):
            return 503
        if error is None:
            return 200
        if isinstance(error, ReplayError):
            return self.replay_status
        if isinstance(error, AuthenticationError):
            return 401
        return self.payload_status


def require_credentials(credentials: Sequence[Mapping[str, str]]) -> None:
    if not credentials:
        raise AuthenticationError("no credentials configured for this provider")


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time equality of two strings or byte strings."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def verify_http_credentials(request: InboundRequest, credentials: Sequence[Mapping[str, str]]) -> None:
    """Basic auth ("username"/"password") or a token ("token", header "header" else Bearer)."""
    require_credentials(credentials)
    if not any(_credentials_match(request, cred) for cred in credentials):
        raise AuthenticationError("credentials do not match")


def _credentials_match(request: InboundRequest, cred: Mapping[str, str]) -> bool:
    authorization = request.header("Authorization") or ""
    scheme, _, value = authorization.strip().partition(" ")
    username, password = cred.get("username"), cred.get("password")
    if username is not None and password is not None and scheme.lower() == "basic":
        try:
            presented = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return same(presented, f"{username}:{password}".encode())
    token = cred.get("token")
    if not token:
        return False
    header = cred.get("header", "Authorization")
    if header.lower() == "authorization":
        return scheme.lower() == "bearer" and same(value.strip(), token)
    return same((request.header(header) or "").strip(), token)


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc


_DECODER = json.JSONDecoder()
_BLANK = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace
_BLANKS = frozenset(" \t\n\r")


def json_array_items(body: bytes) -> list[tuple[dict[str, Any], str]]:
    """The objects of a JSON array body, each with its own JSON text: a slice of the body, so
    the raw event is stored as the provider sent it without being encoded again. Accepts and
    refuses what ``json_objects(load_json(body), allow_single=False)`` does."""
    try:
        document = body.decode(json.detect_encoding(body))
    except (UnicodeDecodeError, LookupError):
        document = ""
    at = _blank(document, 0)
    if document[at : at + 1] != "[":  # not an array, or not text: the plain path says why
        json_objects(load_json(body), allow_single=False)
        raise PayloadError("expected a JSON array of events")
    items: list[tuple[dict[str, Any], str]] = []
    at = _blank(document, at + 1)
    if document[at : at + 1] == "]":
        at += 1
    else:
        at = _array_items(document, at, items)
    if document[at:].strip(" \t\n\r"):
        raise PayloadError("body is not JSON: extra data after the array")
    return items


def _array_items(document: str, at: int, items: list[tuple[dict[str, Any], str]]) -> int:
    """Decode the items from ``at`` up to the closing bracket; the index after it."""
    scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
    while True:
        try:
            item, end = scan(document, at)  # raw_decode without its Python wrapper
        except (StopIteration, ValueError, RecursionError) as exc:
            raise PayloadError(f"body is not JSON at character {at}: {exc!r}") from exc
        if not isinstance(item, dict):
            raise PayloadError("every event must be a JSON object")
        items.append((item, document[at:end]))
        if document[end : end + 1] in _BLANKS:
            end = _blank(document, end)
        separator = document[end : end + 1]
        if separator == "]":
            return end + 1
        if separator != ",":
            raise PayloadError("body is not JSON: expected ',' or ']' between events")
        at = end + 1
        if document[at : at + 1] in _BLANKS:  # json.dumps writes ", ": one space, no regex
            at = at + 1 if document[at + 1 : at + 2] not in _BLANKS else _blank(document, at)


def _blank(document: str, at: int) -> int:
    """The index of the first non-whitespace character from ``at`` (JSON's own whitespace)."""
    match = _BLANK.match(document, at)
    return match.end() if match else at


def json_objects(data: Any, *, allow_single: bool) -> list[Mapping[str, Any]]:
    """The events of a JSON array of objects (or one bare object when allowed)."""
    if isinstance(data, dict) and allow_single:
        return [data]
    if not isinstance(data, list):
        raise PayloadError("expected a JSON array of events")
    if not all(isinstance(item, dict) for item in data):
        raise PayloadError("every event must be a JSON object")
    return data


def obj(value: Any, key: str) -> Mapping[str, Any]:
    """A nested object, or an empty one when absent or of the wrong type."""
    # Exact dict first, everywhere here: the ABC check of Mapping costs more than the rest.
    found = value.get(key) if type(value) is dict or isinstance(value, Mapping) else None
    if type(found) is dict:
        return found
    return found if found is not None and isinstance(found, Mapping) else {}


def text(value: Any, key: str) -> str | None:
    found = value.get(key) if type(value) is dict or isinstance(value, Mapping) else None
    if type(found) is str:
        return found or None
    if found is None or isinstance(found, bool):
        return None
    if isinstance(found, int | float | str):
        return str(found) or None
    return None


def parse_timestamp(value: Any) -> datetime:
    """UTC-aware datetime from epoch seconds or milliseconds (numbers or strings) or ISO 8601."""
    if type(value) is int or type(value) is float:  # the usual case, before the checks below
        return _from_epoch(float(value))
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"missing or invalid timestamp: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if isinstance(value, str):
        stripped = value.strip()
        try:
            number = float(stripped)
        except ValueError:
            number = None
        if number is not None:
            return _from_epoch(number)
        try:
            parsed = datetime.fromisoformat(stripped)
        except ValueError as exc:
            raise PayloadError(f"unreadable timestamp: {value!r}") from exc
        if parsed.tzinfo is None:  # providers that omit the offset mean UTC
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    raise PayloadError(f"unreadable timestamp: {value!r}")


@lru_cache(maxsize=4096)  # the events of a batch share a few instants: build each once
def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise PayloadError("timestamp is not finite")
    if abs(seconds) >= _MILLISECONDS_THRESHOLD:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError) as exc:
        raise PayloadError(f"timestamp out of range: {seconds!r}") from exc


def dedupe_key(provider: str, *parts: object) -> str:
    """``provider:part|part…``; hashed with SHA-256 when it would exceed 255 characters."""
    if len(parts) == 1 and type(parts[0]) is str:  # one provider id: the usual case
        body = parts[0]
    else:
        body = "|".join("" if part is None else str(part) for part in parts)
    key = f"{provider}:{body}"
    if len(key) <= MAX_DEDUPE_KEY_LENGTH:
        return key
    return f"{provider}:sha256:{hashlib.sha256(body.encode()).hexdigest()}"


def as_int(value: Any) -> int | None:
    """An id from metadata: ints and digit strings only (lists use their first item)."""
    if type(value) is str and len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)  # the usual case, what the pattern below accepts, without it
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (match := _INTEGER.fullmatch(value)):
        return int(match.group(1))
    return None


def ids_from(metadata: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(contact_id, campaign_id) read from our ``gk_contact`` / ``gk_campaign`` keys."""
    return as_int(metadata.get(CONTACT_KEY)), as_int(metadata.get(CAMPAIGN_KEY))


def pairs_from_text(value: Any) -> dict[str, Any]:
    """Our ids carried in one string: a JSON object, or ``k=v`` / ``k:v`` pairs."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or not value.strip():
        return {}
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        return decoded
    found: dict[str, Any] = {}
    for chunk in _PAIR_SEPARATORS.split(value.strip()):
        key, sep, item = chunk.partition("=") if "=" in chunk else chunk.partition(":")
        if sep:
            found.setdefault(key.strip(), item.strip())
    return found
