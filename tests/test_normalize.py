"""Coordinates to canonical form: the fast path and the libraries agree."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from gatekeeper.csvio import write_safe_cell
from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(" Paul.Martin@Example.FR ", "paul.martin@example.fr", id="trimmed and lower-cased"),
        pytest.param("jean@exämple.fr", "jean@exämple.fr", id="IDN domain kept in Unicode"),
        pytest.param("jean@xn--exmple-cua.fr", "jean@exämple.fr", id="punycode domain to Unicode"),
        pytest.param("o'neil+promo@example.co.uk", "o'neil+promo@example.co.uk", id="plus and quote"),
    ],
)
def test_emails_are_normalised(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["paul", "paul@", "@example.fr", "a@b", "a..b@example.fr", "a@localhost.test", ""]
)
def test_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(CoordinateError):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("06 12 34 56 78", "+33612345678", id="French national format"),
        pytest.param("06.12.34.56.78", "+33612345678", id="dotted"),
        pytest.param("+33 6 12 34 56 78", "+33612345678", id="international with spaces"),
        pytest.param("0033612345678", "+33612345678", id="00 prefix"),
        pytest.param("+32 470 12 34 56", "+32470123456", id="Belgian mobile"),
        pytest.param("01 23 45 67 89", "+33123456789", id="Paris landline"),
    ],
)
def test_phones_become_e164(raw: str, expected: str) -> None:
    assert normalise_phone(raw, "FR") == expected


@pytest.mark.parametrize("raw", ["12", "06 12", "+33 1", "hello", "06 12 34 56 78 90 12"])
def test_invalid_phones_are_refused(raw: str) -> None:
    with pytest.raises(CoordinateError):
        normalise_phone(raw, "FR")


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+33612345678", "+33612345678"),
        ("-12.5", "-12.5"),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("Paul", "Paul"),
    ],
)
def test_csv_cells_are_safe_against_formula_injection(cell: str, safe: str) -> None:
    assert write_safe_cell(cell) == safe


def _reference_email(raw: str) -> str | None:
    try:
        return str(validate_email(raw.strip().lower(), check_deliverability=False).normalized).lower()
    except EmailNotValidError:
        return None


def _fast_or_none(raw: str) -> str | None:
    try:
        return normalise_email(raw)
    except CoordinateError:
        return None


def test_the_email_fast_path_gives_exactly_what_email_validator_gives() -> None:
    # Random ASCII addresses built from the pieces where the two could disagree: dots, hyphens,
    # "--" (IDNA), digits-only and special-use TLDs, long labels, quotes and plus signs.
    rng = random.Random(2026)
    local = ["a", "Paul", "o'neil", "x+y", "a.b", ".a", "a.", "a..b", "é", "_", "-", "a" * 64, "a" * 65]
    labels = ["example", "ex-ample", "ab--cd", "xn--exmple-cua", "-a", "a-", "1", "a" * 63, "a" * 64, "A"]
    tlds = ["fr", "COM", "co.uk", "test", "invalid", "local", "arpa", "onion", "1", "f", "a" * 63]
    for _ in range(3000):
        domain = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 3))) + "." + rng.choice(tlds)
        address = rng.choice(local) + rng.choice(["@", "@", "@@", ""]) + domain
        assert _fast_or_none(address) == _reference_email(address), address


def _reference_phone(raw: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _phone_or_none(raw: str) -> str | None:
    try:
        return normalise_phone(raw, "FR")
    except CoordinateError:
        return None


def test_the_phone_fast_path_gives_exactly_what_phonenumbers_gives() -> None:
    # Every three-digit French prefix, in both spellings: +33 262… (Réunion dialled from
    # France) or +33 70… have the right length and are still refused by the library.
    rng = random.Random(2026)
    for prefix in range(1000):
        digits = f"{prefix:03d}" + "".join(rng.choice("0123456789") for _ in range(6))
        for raw in ("+33" + digits, "0" + digits):
            assert _phone_or_none(raw) == _reference_phone(raw), raw


@pytest.mark.parametrize("raw", ["+33 2 62 79 78 76", "07 01 23 45 67"])
def test_french_numbers_of_the_right_length_outside_the_numbering_plan_are_refused(raw: str) -> None:
    with pytest.raises(CoordinateError):
        normalise_phone(raw)
