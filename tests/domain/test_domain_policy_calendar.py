"""Policy loading and validation; French holidays and D223-9 windows."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import date, datetime, time
from typing import Any

import pytest
from domain_builders import POLICY_FILE, at, policy, policy_data

from gatekeeper.domain import (
    FactError,
    InterestFact,
    PolicyError,
    classify_email,
    easter_sunday,
    french_holidays,
    phone_call_allowed,
    policy_from_mapping,
    policy_from_toml,
)
from gatekeeper.domain.errors import DomainError

P = pytest.param


def test_the_shipped_policy_file_builds_a_policy() -> None:
    pol = policy()
    assert (pol.id, pol.version, pol.default_timezone) == ("fr-2026", "2026.11.1", "Europe/Paris")
    assert pol.phone_windows == ((time(10), time(13)), (time(14), time(20)))
    assert pol.phone_weekdays == frozenset(range(5))
    assert (pol.phone_max_attempts, pol.phone_attempt_window_days) == (4, 30)
    assert pol.phone_consent_required_from == date(2026, 8, 11)
    assert pol.prospect_retention_years == pol.client_retention_years == 3
    assert {"gmail.com", "orange.fr", "laposte.net"} <= pol.personal_mailbox_domains
    assert pol.banned_sectors == {"energy_renovation", "home_adaptation"}
    assert pol.analogous("coffee_capsules", "coffee_machines")
    assert not pol.analogous("coffee_capsules", "tea_bags")
    assert policy_from_toml(POLICY_FILE.read_text(encoding="utf-8")) == pol


def _broken(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(policy_data())
    *parents, key = path.split(".")
    table = data
    for part in parents:
        table = table[part]
    if value is KeyError:
        del table[key]
    else:
        table[key] = value
    return data


@pytest.mark.parametrize(
    ("path", "value"),
    [
        P("version", KeyError, id="missing version"),
        P("phone.max_attempts", "four", id="max_attempts not an integer"),
        P("phone.max_attempts", True, id="max_attempts a boolean"),
        P("retention.prospect_years", 0, id="zero years"),
        P("phone.windows", [["13:00", "10:00"]], id="window ending before it starts"),
        P("phone.windows", [["10:00", "14:00"], ["13:00", "20:00"]], id="overlapping windows"),
        P("phone.weekdays", ["monday"], id="bad weekday name"),
        P("phone.consent_required_from", "11/08/2026", id="bad date"),
        P("default_timezone", "Europe/Lutece", id="unknown time zone"),
        P("audience.allow_unknown_b2b_postal", "no", id="flag not a boolean"),
        P("interest.typo_key", 1, id="unknown key"),
        P("retention.reconsent_reminder_days", 30, id="reminder not before the lead"),
    ],
)
def test_policy_errors_name_the_bad_key(path: str, value: Any) -> None:
    with pytest.raises(PolicyError, match=path.rsplit(".", maxsplit=1)[-1]) as info:
        policy_from_mapping(_broken(path, value))
    assert isinstance(info.value, DomainError)


def test_a_category_in_two_families_is_refused() -> None:
    data = _broken("product_families.tea", ["tea_bags", "coffee_beans"])
    with pytest.raises(PolicyError, match="product_families"):
        policy_from_mapping(data)


def test_invalid_toml_is_a_policy_error() -> None:
    with pytest.raises(PolicyError):
        policy_from_toml("id = ")


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2027, date(2027, 3, 28)),
        (2038, date(2038, 4, 25)),
    ],
)
def test_easter(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_french_holidays_2026() -> None:
    holidays = french_holidays(2026)
    assert len(holidays) == 11
    for day in ("2026-04-06", "2026-05-14", "2026-05-25", "2026-07-14", "2026-11-11"):
        assert date.fromisoformat(day) in holidays
    assert date(2026, 4, 3) not in holidays  # Good Friday: Alsace-Moselle only


@pytest.mark.parametrize(
    ("local", "zone", "allowed"),
    [
        P("2026-11-24T10:00", "Europe/Paris", True, id="Tuesday 10:00 Paris"),
        P("2026-11-24T09:59:59", "Europe/Paris", False, id="Tuesday 09:59:59"),
        P("2026-11-24T12:59:59", "Europe/Paris", True, id="Tuesday 12:59:59"),
        P("2026-11-24T13:00", "Europe/Paris", False, id="Tuesday 13:00 (lunch starts)"),
        P("2026-11-24T14:00", "Europe/Paris", True, id="Tuesday 14:00"),
        P("2026-11-24T19:59:59", "Europe/Paris", True, id="Tuesday 19:59:59"),
        P("2026-11-24T20:00", "Europe/Paris", False, id="Tuesday 20:00"),
        P("2026-11-27T11:00", "Europe/Paris", True, id="Friday 11:00"),
        P("2026-11-28T11:00", "Europe/Paris", False, id="Saturday 11:00"),
        P("2026-11-29T11:00", "Europe/Paris", False, id="Sunday 11:00"),
        P("2026-05-25T11:00", "Europe/Paris", False, id="Whit Monday 11:00"),
        P("2026-05-14T11:00", "Europe/Paris", False, id="Ascension Thursday 11:00"),
        P("2026-03-30T11:00", "Europe/Paris", True, id="Monday after the DST change 11:00"),
        P("2026-11-24T16:00", "Europe/London", True, id="16:00 Paris is 15:00 in London"),
        P("2026-11-24T14:30", "Europe/London", False, id="14:30 Paris is 13:30 in London"),
    ],
)
def test_phone_call_allowed(local: str, zone: str, allowed: bool) -> None:
    assert phone_call_allowed(at(local), zone, policy()) is allowed


@pytest.mark.parametrize(
    ("email", "kind"),
    [
        P("contact@acme.fr", "generic", id="contact@ company -> generic"),
        P("service-client@acme.fr", "generic", id="service-client@ -> generic"),
        P("info+fr@acme.fr", "generic", id="info+tag@ -> generic"),
        P("paul.martin@acme.fr", "other", id="a named person at a company -> other"),
        P("paul.martin@gmail.com", "personal_domain", id="gmail.com -> personal_domain"),
        P("contact@orange.fr", "personal_domain", id="contact@orange.fr is a person's mailbox"),
        P("Paul@LaPoste.net", "personal_domain", id="case-insensitive domain"),
    ],
)
def test_classify_email(email: str, kind: str) -> None:
    assert classify_email(email, policy()) == kind


def test_domain_imports_no_framework_in_a_fresh_interpreter() -> None:
    code = (
        "import sys, gatekeeper.domain\n"
        "bad = [m for m in ('flask', 'sqlalchemy', 'requests', 'psycopg', 'werkzeug')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_domain_source_reads_no_clock_environment_or_files() -> None:
    forbidden = ("datetime.now", "date.today", "utcnow", "os.environ", "open(", "import os")
    for path in sorted((POLICY_FILE.parents[2] / "gatekeeper" / "domain").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not [f for f in forbidden if f in text], path.name


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(FactError, match="timezone-aware"):
        InterestFact("click", datetime(2026, 1, 1))
    assert at("2026-01-01").utcoffset() is not None
