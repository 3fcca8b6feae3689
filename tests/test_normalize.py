"""Coordinates to canonical form: the fast path and the libraries agree."""

from __future__ import annotations

import pytest

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
