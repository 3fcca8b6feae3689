"""The import's compiled row plan agrees with the reference parser, row by row."""

from __future__ import annotations

import random

import pytest

from gatekeeper.config import load_settings
from gatekeeper.register.contact_facts import FactTable
from gatekeeper.register.contact_plan import ContactPlan
from gatekeeper.register.contacts import parse_contact
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.register.schema import Problems

HEADER = [
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "postal_address.line1",
    "postal_address.city",
    "collected_at",
    "collected_by",
    "source.type",
    "source.name",
    "source.proof_ref",
    "audience",
    "purpose",
    "timezone",
    "profession_tags",
    "attributes.shoe_size",
    "attributes.club",
    "unknown_column",
]


def row(**cells: str) -> list[str]:
    """A row of HEADER from the cells given (dots in names spelt as double underscores),
    collected on 2 January 2025 unless said otherwise."""
    named = {"collected_at": "2025-01-02"} | {k.replace("__", "."): v for k, v in cells.items()}
    return [named.get(h, "") for h in HEADER]


FULL = row(
    external_id="  c2 ",
    email=" Paul.Martin@Example.FR ",
    phone="06 12 34 56 78",
    first_name=" Hélène ",
    last_name="Dupré",
    postal_address__line1="1 rue X ",
    postal_address__city=" ",
    collected_at="2025-01-02T10:00:00+01:00",
    collected_by="shop",
    source__type="purchase",
    source__name="Salon",
    source__proof_ref="proof-1",
    audience="b2b",
    purpose="customer_service",
    timezone="Europe/Paris",
    profession_tags="médecin; ; kiné",
    attributes__shoe_size="42",
    unknown_column="x",
)
ROWS = [
    pytest.param(row(external_id="c1", email="paul@example.fr"), id="plain"),
    pytest.param(FULL, id="every field, spaces kept where the reference keeps them"),
    pytest.param(row(phone="+32 470 12 34 56", attributes__club="gold"), id="phone only"),
    pytest.param(row(external_id="c4", email="jean@exämple.fr"), id="IDN address"),
    pytest.param(row(external_id="c5", email="jean@xn--exmple-cua.fr"), id="punycode"),
    pytest.param(row(external_id="c6", email="not-an-email"), id="bad email"),
    pytest.param(row(external_id="c7", phone="12"), id="bad phone"),
    pytest.param(row(external_id="c8", collected_at="2025-13-02", source__type="mars"), id="bad date"),
    pytest.param(row(external_id="c9", collected_at=""), id="collected_at missing"),
    pytest.param(row(first_name="Paul"), id="no identity"),
    pytest.param(row(external_id="c10", first_name="x" * 2001), id="text too long"),
    pytest.param(row(external_id="c14", last_name="x" * 201), id="longer than its column"),
    pytest.param(row(external_id="c11", email="  "), id="blank email"),
    pytest.param(row(external_id="c12", timezone="Mars/Olympus"), id="unknown zone"),
    pytest.param(row(external_id="c13", email="a@ab--cd.fr"), id="'--' in a label"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> RegisterContext:
    db = tmp_path_factory.mktemp("plan") / "unused.db"
    settings = load_settings(
        environ={}, overrides={"env": "test", "secret_key": "k", "database_url": f"sqlite:///{db}"}
    )
    return context_from(settings)


def routes(ctx: RegisterContext, header: list[str], values: list[str]) -> tuple[object, object, Problems]:
    plan = ContactPlan(header, FactTable(ctx.policy), ctx.region)
    fast = plan.stage_row(7, values)
    problems = Problems()
    record = parse_contact(dict(zip(header, values, strict=False)), 7, problems, ctx.region)
    reference = None if record is None else plan.stage_tuple(record)
    return fast, reference, problems


@pytest.mark.parametrize("values", ROWS)
def test_the_fast_route_stages_what_the_reference_parser_accepts_or_steps_aside(
    ctx: RegisterContext, values: list[str]
) -> None:
    fast, reference, _ = routes(ctx, HEADER, values)
    assert fast is None or fast == reference


def test_a_plain_row_takes_the_fast_route(ctx: RegisterContext) -> None:
    fast, reference, problems = routes(ctx, HEADER, FULL)
    assert fast is not None and fast == reference and not problems


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(["external_id", "email", "email", "collected_at"], id="a repeated column"),
        pytest.param(["external_id", "source", "collected_at", "email"], id="a bare nested column"),
    ],
)
def test_headers_the_plan_cannot_read_like_the_reference_go_to_the_reference(
    ctx: RegisterContext, header: list[str]
) -> None:
    plan = ContactPlan(header, FactTable(ctx.policy), ctx.region)
    assert plan.stage_row(1, ["c1", "a@example.fr", "2025-01-01", "b@example.fr"]) is None


def test_rows_shorter_or_longer_than_the_header_go_to_the_reference(ctx: RegisterContext) -> None:
    header = ["external_id", "collected_at", "first_name"]
    plan = ContactPlan(header, FactTable(ctx.policy), ctx.region)
    assert plan.stage_row(1, ["c1", "2025-01-01"]) is None
    assert plan.stage_row(1, ["c1", "2025-01-01", "Paul", "extra"]) is None
    assert plan.stage_row(1, ["c1", "2025-01-01", "Paul"]) is not None


def test_random_rows_agree(ctx: RegisterContext) -> None:
    rng = random.Random(7)
    cells = {
        "email": ["", "a@b.fr", " X.Y@Example.COM ", "bad@", "é@exämple.fr", "a@b--c.fr"],
        "phone": ["", "0612345678", "+33 6 12 34 56 78", "12", "+44 20 7946 0958"],
        "collected_at": ["2025-01-01", "2025-06-30T23:59:59Z", "", "yesterday"],
        "audience": ["", "b2b", "b2c", "B2B"],
        "profession_tags": ["", "a;b", " a ; ;b "],
    }
    header = ["external_id", *cells]
    took_fast_route = 0
    for n in range(500):
        values = [rng.choice(["", f"c{n}", f" c{n} "])] + [rng.choice(v) for v in cells.values()]
        fast, reference, _ = routes(ctx, header, values)
        assert fast is None or fast == reference, values
        took_fast_route += fast is not None
    assert took_fast_route > 50  # else the agreement above would prove nothing


def test_the_facts_of_equal_rows_are_numbered_once(ctx: RegisterContext) -> None:
    facts = FactTable(ctx.policy)
    plan = ContactPlan(["email", "collected_at", "audience"], facts, ctx.region)
    for n in range(100):
        plan.stage_row(n + 1, [f"u{n}@example.fr", f"2025-01-0{1 + n % 2}", "b2b"])
    assert len(facts.ids) == 2
    assert len(list(facts.rows("sqlite"))) == 2


def test_fact_rows_hold_what_the_register_stores_for_a_new_contact(ctx: RegisterContext) -> None:
    # Reference: clocks.NewContactSummaries, the memo the upsert uses for contacts without events.
    from datetime import UTC, datetime, timedelta

    from gatekeeper.register.clocks import NewContactSummaries
    from gatekeeper.register.contact_facts import Facts
    from gatekeeper.sqlbulk import json_value, ts_value

    facts = FactTable(ctx.policy)
    start = datetime(2024, 2, 29, 23, 30, tzinfo=UTC)
    for n in range(60):
        facts.id_of(
            Facts(
                ("b2c", "b2b")[n % 2],
                (("médecin",), ())[n % 3 == 0],
                start + timedelta(days=n * 11, seconds=n * 37),
                (None, "shop")[n % 4 == 0],
                ("direct", "purchase", "broker")[n % 3],
                ("marketing", "customer_service")[n % 5 == 0],
                (None, "America/Cayenne")[n % 7 == 0],
            )
        )
    reference = NewContactSummaries(ctx.policy)
    for row, (f, fid) in zip(facts.rows("sqlite"), facts.ids.items(), strict=True):
        s = reference.for_record(f)
        ts = [ts_value("sqlite", t) for t in (s.anchor_at, s.deadline, s.reconsent_at)]
        expected = (s.clock, ts[0], s.anchor_kind, ts[1], ts[2], s.profile_key, json_value(s.instants))
        assert row[0] == fid and row[8:] == expected
    assert facts.profiles == reference.profiles
