"""Coordinates to their canonical form: e-mails lower-cased (IDN domains to Unicode NFC via
email-validator), phones to E.164 (national formats read in the default region).

The bulk paths call these a million times, so the common case (plain ASCII address, already
E.164 or French national number) takes a regular-expression fast path; anything unusual goes
through the full libraries, which also produce the error message.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
# Special-use TLDs that email-validator refuses: leave them to the slow path to get its error.
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test", "example"})
# The TLD is tested in the same match (a lookahead) rather than by splitting the address.
_FAST_EMAIL = re.compile(
    rf"^{_ATEXT}(?:\.{_ATEXT})*@(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+"
    rf"(?!(?:{'|'.join(sorted(_SPECIAL_TLDS))})$)[a-z]{{2,63}}$"
)
_PHONE_JUNK = re.compile(r"[\s.\-()/]")


class CoordinateError(ValueError):
    pass


def normalise_email(raw: str) -> str:
    text = raw.strip().lower()
    # Punycode domains ("xn--") take the slow path so both spellings of an IDN address meet;
    # so does any other "--", which IDNA refuses in a label's third and fourth characters.
    if len(text) <= 254 and "--" not in text and _FAST_EMAIL.match(text):
        return text
    return _slow_email(text)


@lru_cache(maxsize=4096)
def _slow_email(text: str) -> str:
    if not text:
        raise CoordinateError("empty e-mail address")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise CoordinateError(str(exc)) from exc
    return str(result.normalized).lower()


def normalise_phone(raw: str, region: str = "FR") -> str:
    text = _PHONE_JUNK.sub("", raw.strip())
    if text.startswith("00"):
        text = "+" + text[2:]
    if region == "FR" and len(text) == 10 and text[0] == "0" and text[1] != "0" and text.isdigit():
        text = "+33" + text[1:]
    if len(text) == 12 and text.startswith("+33") and _FR_VALID.fullmatch(text, 3):
        return text  # a French number the library itself deems valid: no need to ask it
    return _slow_phone(text, region)


def _valid_national(region: str, length: int) -> re.Pattern[str]:
    """The national numbers of ``length`` digits that ``phonenumbers.is_valid_number`` accepts
    for ``region``, read from the library's own metadata: nine digits after +33 are not enough
    (+33 262… is Réunion's +262 dialled from France, refused as a French number)."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert meta is not None and meta.general_desc is not None, region
    types = (
        meta.fixed_line,
        meta.mobile,
        meta.toll_free,
        meta.premium_rate,
        meta.shared_cost,
        meta.personal_number,
        meta.voip,
        meta.pager,
        meta.uan,
        meta.voicemail,
    )
    patterns = [
        f"(?:{d.national_number_pattern})"
        for d in types
        if d is not None
        and d.national_number_pattern
        and (not d.possible_length or length in d.possible_length)
    ]
    general = meta.general_desc.national_number_pattern
    return re.compile(rf"(?=\d{{{length}}}$)(?=(?:{general})$)(?:{'|'.join(patterns)})")


_FR_VALID = _valid_national("FR", 9)


@lru_cache(maxsize=4096)
def _slow_phone(text: str, region: str) -> str:
    if not text:
        raise CoordinateError("empty phone number")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise CoordinateError(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise CoordinateError(f"not a valid phone number for {region}: {text!r}")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
