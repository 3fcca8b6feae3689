"""CSV imports as marketers send them: encodings, delimiters, quoting, bad rows, repeats."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

HEADER = "external_id,email,phone,first_name,last_name,collected_at,source.type,postal_address.city\n"


def upload(client: FlaskClient, auth: dict[str, str], kind: str, data: bytes, multipart: bool = False) -> Any:
    if multipart:
        import io

        return client.post(
            f"/api/v1/imports?kind={kind}",
            headers=auth,
            data={"file": (io.BytesIO(data), "list.csv")},
            content_type="multipart/form-data",
        )
    return client.post(f"/api/v1/imports?kind={kind}", headers=auth, data=data, content_type="text/csv")


def finished(app: Flask, client: FlaskClient, auth: dict[str, str], res: Any) -> dict[str, Any]:
    assert res.status_code == 202, res.json
    job_id = res.json["id"]
    app.extensions["gatekeeper.jobs"].wait(job_id)
    for _ in range(50):
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def count(app: Flask, table: str) -> int:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.fixture(params=["same process", "second process"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Large files are read by a second process: every file is, in the second variant."""
    from gatekeeper.register import contact_import

    if request.param == "second process":
        monkeypatch.setattr(contact_import, "PARALLEL_FROM_BYTES", 0)
    return str(request.param)


@pytest.fixture(params=["plain insert", "index rebuild", "on conflict", "first load"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How new contacts go in: one plain insert (the usual route), the same with the timestamp
    indexes dropped and built again after it (a large load into a register at most half its
    size), the ``ON CONFLICT`` route taken when a unique index refused a row of the plain one,
    or (SQLite, empty register) inserted in chunks while the file is read."""
    from gatekeeper.register import contact_import

    if request.param == "index rebuild":
        monkeypatch.setattr(contact_import, "REBUILD_FROM_ROWS", 0)
    elif request.param == "on conflict":
        monkeypatch.setattr(contact_import, "_insert_plain", lambda *_args: None)
    elif request.param == "first load":
        first_load(monkeypatch)
    return str(request.param)


def first_load(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Every file imported into an empty SQLite register takes ``load_first``, a chunk a batch;
    what each call returned (None: it did not apply and the staged route ran)."""
    from gatekeeper.register import contact_import

    monkeypatch.setattr(contact_import, "FIRST_LOAD_FROM_BYTES", 0)
    monkeypatch.setattr(contact_import, "FIRST_LOAD_CHUNK", 1)
    returned: list[int | None] = []
    real = contact_import.load_first

    def recorded(*args: Any) -> int | None:
        returned.append(real(*args))
        return returned[-1]

    monkeypatch.setattr(contact_import, "load_first", recorded)
    return returned


ENCODINGS = [
    pytest.param(("utf-8", b"", ","), id="utf-8 comma"),
    pytest.param(("utf-8", b"\xef\xbb\xbf", ","), id="utf-8 with BOM"),
    pytest.param(("cp1252", b"", ";"), id="windows-1252 semicolon (Excel FR)"),
]


@pytest.mark.parametrize("variant", ENCODINGS)
def test_contacts_files_in_every_common_encoding_and_delimiter_are_read(
    app: Flask, client: FlaskClient, auth: dict[str, str], variant: tuple[str, bytes, str], reader: str
) -> None:
    encoding, bom, sep = variant
    rows = [
        HEADER.replace(",", sep),
        sep.join(
            [
                "c1",
                "hélène@example.fr",
                "06 12 34 56 78",
                "Hélène",
                "Dupré",
                "2025-01-02",
                "direct",
                '"Saint-Étienne\nCedex"',
            ]
        )
        + "\n",
        sep.join(
            [
                "c2",
                "JEAN@EXAMPLE.FR",
                "",
                "Jean",
                "Œuvray",
                "2025-01-03T10:00:00+01:00",
                "event",
                "Lyon",
            ]
        )
        + "\n",
    ]
    body = bom + "".join(rows).encode(encoding)
    job = finished(app, client, auth, upload(client, auth, "contacts", body))
    assert job["state"] == "done", job
    assert job["result"] == {"created": 2, "updated": 0, "unchanged": 0}
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        got = conn.execute(
            text(
                "SELECT external_id, email, phone, first_name, last_name, postal_address "
                "FROM contacts ORDER BY external_id"
            )
        ).all()
    assert got[0][:5] == ("c1", "hélène@example.fr", "+33612345678", "Hélène", "Dupré")
    address = json.loads(got[0][5]) if isinstance(got[0][5], str) else got[0][5]
    assert address == {"city": "Saint-Étienne\nCedex"}  # a quoted field with a newline
    assert got[1][1:5] == ("jean@example.fr", None, "Jean", "Œuvray")


def test_a_file_with_bad_rows_is_refused_whole_naming_row_and_field(
    app: Flask, client: FlaskClient, auth: dict[str, str], reader: str
) -> None:
    body = (
        HEADER + "c1,ok@example.fr,,,,2025-01-01,direct,\n"
        "c2,not-an-email,,,,2025-01-01,direct,\n"
        "c3,x@example.fr,12,,,2025-13-01,martian,\n"
    ).encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", body, multipart=True))
    assert job["state"] == "failed"
    problems = {(e["row"], e["field"]) for e in job["errors"]}
    assert {(2, "email"), (3, "phone"), (3, "collected_at"), (3, "source.type")} <= problems
    assert count(app, "contacts") == 0


def test_importing_the_same_files_twice_changes_nothing_the_second_time(
    app: Flask, client: FlaskClient, auth: dict[str, str], reader: str, route: str
) -> None:
    contacts = (
        HEADER + "c1,a@example.fr,,,,2025-01-01,direct,\nc2,b@example.fr,,,,2025-01-01,direct,\n"
    ).encode()
    events = (
        b"contact.external_id,type,occurred_at,kind,channel,given\n"
        b"c1,interest,2026-01-10T10:00:00Z,click,,\nc2,consent,2025-01-01,,email,true\n"
    )
    sups = b"email,reason,channels,occurred_at\nz@example.fr,complaint,all,2026-01-01\n"
    first = [
        finished(app, client, auth, upload(client, auth, k, b))["result"]
        for k, b in (("contacts", contacts), ("events", events), ("suppressions", sups))
    ]
    assert first == [
        {"created": 2, "updated": 0, "unchanged": 0},
        {"stored": 2, "duplicates": 0},
        {"stored": 1},
    ]
    before = [count(app, t) for t in ("contacts", "events", "suppressions")]
    second = [
        finished(app, client, auth, upload(client, auth, k, b))["result"]
        for k, b in (("contacts", contacts), ("events", events))
    ]
    assert second == [{"created": 0, "updated": 0, "unchanged": 2}, {"stored": 0, "duplicates": 2}]
    finished(app, client, auth, upload(client, auth, "suppressions", sups))
    assert [count(app, t) for t in ("contacts", "events", "suppressions")] == before


def test_duplicate_identities_in_one_file_are_named(
    app: Flask, client: FlaskClient, auth: dict[str, str], reader: str, route: str
) -> None:
    body = (
        HEADER + "c1,a@example.fr,,,,2025-01-01,direct,\nc2,A@Example.fr,,,,2025-01-01,direct,\n"
    ).encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", body))
    assert job["state"] == "failed"
    assert job["errors"][0] == {
        "row": 2,
        "field": "email",
        "problem": "same email as row 1: a contact appears once per batch",
    }


def test_a_too_large_upload_gets_413(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1000
    res = upload(client, auth, "contacts", HEADER.encode() + b"x" * 2000)
    assert res.status_code == 413
    assert res.json["error"]["code"] == "request_entity_too_large"


def test_an_unknown_import_kind_is_a_422(client: FlaskClient, auth: dict[str, str]) -> None:
    res = upload(client, auth, "invoices", HEADER.encode())
    assert res.status_code == 422
    assert res.json["error"]["details"][0]["field"] == "kind"


def test_bloctel_file_listing_becomes_phone_suppressions(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    res = client.post(
        "/api/v1/suppressions/bloctel?checked_at=2026-07-01",
        headers=auth,
        data="0612345678\n+33 7 81 23 45 67\n\n",
        content_type="text/plain",
    )
    assert res.status_code == 200, res.json
    assert res.json["stored"] == 2
    assert count(app, "bloctel_checks") == 1
    bad = client.post(
        "/api/v1/suppressions/bloctel?checked_at=2026-07-01",
        headers=auth,
        data="0612345678\nhello\n",
        content_type="text/plain",
    )
    assert bad.status_code == 422
    assert bad.json["error"]["details"][0]["line"] == 2


def contacts_by_external_id(app: Flask) -> dict[str | None, tuple[Any, ...]]:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        rows = conn.execute(text("SELECT external_id, email, first_name, clock, profile_key FROM contacts"))
        return {r[0]: tuple(r[1:]) for r in rows}


def test_a_file_mixing_new_and_known_contacts_creates_and_updates(
    app: Flask, client: FlaskClient, auth: dict[str, str], reader: str, route: str
) -> None:
    first = (
        HEADER + "c1,a@example.fr,,Paul,,2025-01-01,direct,\n,solo@example.fr,,,,2025-01-01,direct,\n"
    ).encode()
    assert finished(app, client, auth, upload(client, auth, "contacts", first))["result"]["created"] == 2
    # c1 renamed; the address-only contact gets its CRM id (matched by e-mail); c3 is new.
    second = (
        HEADER + "c1,a@example.fr,,Paula,,2025-01-01,direct,\n"
        "c9,SOLO@example.fr,,,,2025-01-01,direct,\n"
        "c3,c@example.fr,,Chloé,,2025-02-01,event,\n"
    ).encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", second))
    assert job["result"] == {"created": 1, "updated": 2, "unchanged": 0}, job
    stored = contacts_by_external_id(app)
    assert set(stored) == {"c1", "c9", "c3"}
    assert stored["c1"][:2] == ("a@example.fr", "Paula")
    assert stored["c9"][0] == "solo@example.fr"
    assert stored["c3"][:3] == ("c@example.fr", "Chloé", "prospect") and stored["c3"][3]


@pytest.mark.usefixtures("route")
def test_a_row_naming_another_contacts_email_refuses_the_file(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    first = (HEADER + "c1,a@example.fr,,,,2025-01-01,direct,\n").encode()
    finished(app, client, auth, upload(client, auth, "contacts", first))
    second = (
        HEADER + "c2,new@example.fr,,,,2025-01-01,direct,\nc3,a@example.fr,,,,2025-01-01,direct,\n"
    ).encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", second))
    assert job["state"] == "failed"
    assert job["errors"][0]["row"] == 2 and job["errors"][0]["field"] == "email"
    assert "(external_id c1)" in job["errors"][0]["problem"]
    assert set(contacts_by_external_id(app)) == {"c1"}  # c2, though new, was not stored either


def test_rows_short_of_cells_read_as_empty_and_rows_with_extra_cells_are_refused(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    short = (HEADER + "c1,a@example.fr,,Paul,,2025-01-01\n").encode()
    assert finished(app, client, auth, upload(client, auth, "contacts", short))["result"]["created"] == 1
    extra = (HEADER + "c2,b@example.fr,,,,2025-01-01,direct,Lyon,surplus\n").encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", extra))
    assert job["errors"] == [{"row": 1, "field": None, "problem": "1 more value(s) than header columns"}]


def test_a_large_file_reports_progress_and_stores_every_row_with_its_clock(
    app: Flask, tmp_path: Any, reader: str
) -> None:
    from gatekeeper.register.imports import PROGRESS_EVERY, import_file

    path = tmp_path / "big.csv"
    rows = PROGRESS_EVERY + 5
    lines = [f"c{n},u{n}@example.fr,,,,2025-01-{1 + n % 28:02d},direct,Paris\n" for n in range(rows)]
    path.write_text(HEADER + "".join(lines))
    seen: list[int] = []
    with app.extensions["gatekeeper.db"].session_scope() as session:
        result = import_file(session, "contacts", path, app.extensions["gatekeeper.context"], seen.append)
    assert result == {"created": rows, "updated": 0, "unchanged": 0}
    assert seen == [PROGRESS_EVERY]
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        missing = conn.execute(
            text("SELECT count(*) FROM contacts WHERE deadline IS NULL OR email_hash IS NULL")
        )
        assert missing.scalar_one() == 0


def test_an_import_job_of_many_rows_reports_its_progress_and_finishes(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    # Progress comes every PROGRESS_EVERY rows, while the job's transaction is open.
    from gatekeeper.register.imports import PROGRESS_EVERY

    rows = PROGRESS_EVERY + 5
    lines = "".join(f"c{n},u{n}@example.fr,,,,2025-01-01,direct,Paris\n" for n in range(rows))
    job = finished(app, client, auth, upload(client, auth, "contacts", (HEADER + lines).encode()))
    assert (job["state"], job["result"]["created"]) == ("done", rows), job["errors"]
    assert job["progress"] == {"done": rows, "total": rows}


def test_a_job_reports_progress_while_its_own_transaction_holds_the_write_lock(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    from gatekeeper.jobs import job_kind, progress_file

    seen: list[dict[str, Any]] = []

    @job_kind("test.progress-under-lock")
    def locking(session: Any, params: dict[str, Any], progress: Any, _ctx: Any, _services: Any) -> Any:
        # A write: on SQLite the database's only write lock is this job's until it commits.
        session.execute(text("DELETE FROM contacts WHERE id < 0"))
        progress(0, 10)
        progress(5, None)
        seen.append(client.get(f"/api/v1/jobs/{params['job_id']}", headers=auth).json["progress"])
        return {}

    runner = app.extensions["gatekeeper.jobs"]
    with app.extensions["gatekeeper.db"].session_scope() as session:
        job_id = runner.submit(session, "test.progress-under-lock", {}).id
    runner.start(job_id)
    runner.wait(job_id)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json
    assert seen == [{"done": 5, "total": 10}]
    assert (job["state"], job["progress"]) == ("done", {"done": 10, "total": 10})
    path = progress_file(app.extensions["gatekeeper.db"].url, job_id)
    assert path is None or not path.exists()  # SQLite's file goes when the job ends


def test_a_bad_row_at_the_end_of_a_large_file_stores_nothing(app: Flask, tmp_path: Any) -> None:
    from gatekeeper.errors import ValidationError
    from gatekeeper.register.imports import import_file

    path = tmp_path / "big.csv"
    lines = [f"c{n},u{n}@example.fr,,,,2025-01-01,direct,\n" for n in range(3000)]
    path.write_text(HEADER + "".join(lines) + "c-last,broken@,,,,2025-01-01,direct,\n")
    database, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]
    with pytest.raises(ValidationError) as caught, database.session_scope() as session:
        import_file(session, "contacts", path, ctx)
    assert caught.value.details[0]["row"] == 3001
    assert count(app, "contacts") == 0


@pytest.mark.usefixtures("reader")
def test_an_unreadable_csv_is_refused_with_its_row(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    body = (HEADER + "c1,a@example.fr,,,,2025-01-01,direct,\n" + "c2," + "x" * 140_000 + "\n").encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", body))
    assert job["state"] == "failed"
    assert job["errors"][0]["row"] == 2 and "field larger than field limit" in job["errors"][0]["problem"]
    assert count(app, "contacts") == 0


@pytest.mark.usefixtures("reader")
@pytest.mark.parametrize(
    ("cells", "field"),
    [
        pytest.param("c1,a@example.fr,,{long},,2025-01-01,direct,", "first_name", id="first name"),
        pytest.param("{long},a@example.fr,,,,2025-01-01,direct,", "external_id", id="external id"),
    ],
)
def test_a_value_longer_than_its_column_is_refused_with_its_row_and_field(
    app: Flask, client: FlaskClient, auth: dict[str, str], cells: str, field: str
) -> None:
    # The contacts columns hold 200 characters: PostgreSQL would fail the whole job on the insert.
    body = (
        HEADER + "c0,ok@example.fr,,,,2025-01-01,direct,\n" + cells.format(long="x" * 201) + "\n"
    ).encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", body))
    assert job["state"] == "failed"
    assert job["errors"] == [{"row": 2, "field": field, "problem": "text longer than 200 characters"}]
    assert count(app, "contacts") == 0


@pytest.mark.usefixtures("reader")
@pytest.mark.parametrize(
    ("cells", "field"),
    [
        pytest.param("c1,a@example.fr,,An\x00ne,,2025-01-01,direct,", "first_name", id="first name"),
        pytest.param("c1,a@example.fr,,,An\x00ne,2025-01-01,direct,", "last_name", id="last name"),
        pytest.param("c\x001,a@example.fr,,,,2025-01-01,direct,", "external_id", id="external id"),
    ],
)
def test_a_nul_character_is_refused_with_its_row_and_field(
    app: Flask, client: FlaskClient, auth: dict[str, str], cells: str, field: str
) -> None:
    # csv.reader accepts NUL; PostgreSQL text cannot store it and would fail the job without a
    # row (JSON columns such as the address keep it escaped, so they need no rule).
    body = (HEADER + "c0,ok@example.fr,,,,2025-01-01,direct,\n" + cells + "\n").encode()
    job = finished(app, client, auth, upload(client, auth, "contacts", body))
    assert job["state"] == "failed"
    assert job["errors"] == [{"row": 2, "field": field, "problem": "text contains a NUL character"}]
    assert count(app, "contacts") == 0


KNOWN = HEADER + "k1,k1@example.fr,,Kim,,2024-03-01,direct,\nk2,,+33612345678,,,2024-03-02,event,\n"
# k1 renamed, k2 given an e-mail, n1..n6 new (phones, cities, dates and sources varied).
MIXED = HEADER + "".join(
    [
        "n1,n1@example.fr,,Nina,,2025-01-01,direct,Lyon\n",
        "k1,k1@example.fr,,Kima,,2024-03-01,direct,\n",
        "n2,n2@example.fr,+33781234567,,,2025-02-03T10:00:00+01:00,event,\n",
        "k2,k2@example.fr,+33612345678,,,2024-03-02,event,\n",
        "n3,,+33623456789,,Roy,2025-03-04,purchase,Nice\n",
        ",n4@example.fr,,,,2025-04-05,direct,Lyon\n",
        "n5,n5@example.fr,,,,2025-01-01,direct,Lyon\n",
        "n6,n6@example.fr,,,,2023-12-31,partner,\n",
    ]
)


def register_rows(app: Flask) -> list[tuple[Any, ...]]:
    """Every stored column of every contact in id order, except the id and the write times."""
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        names = conn.execute(text("SELECT * FROM contacts")).keys()
        kept = [c for c in names if c not in ("id", "created_at", "updated_at")]
        rows = conn.execute(text(f"SELECT {', '.join(kept)} FROM contacts ORDER BY id"))
        return [
            tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in r) for r in rows
        ]


def contact_indexes(app: Flask) -> list[tuple[str, str]]:
    database = app.extensions["gatekeeper.db"]
    sql = (
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contacts'"
        if database.dialect == "sqlite"
        else "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'contacts'"
    )
    with database.engine.connect() as conn:
        return sorted((str(n), str(d)) for n, d in conn.execute(text(sql)))


def import_path(app: Flask, path: Any) -> dict[str, Any]:
    from gatekeeper.register.imports import import_file

    with app.extensions["gatekeeper.db"].session_scope() as session:
        return import_file(session, "contacts", path, app.extensions["gatekeeper.context"])


def test_every_insert_route_stores_the_same_register(
    app: Flask, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatekeeper.register import contact_import

    known, mixed = tmp_path / "known.csv", tmp_path / "mixed.csv"
    known.write_text(KNOWN)
    mixed.write_text(MIXED)
    indexes = contact_indexes(app)
    plain_insert = contact_import._insert_plain
    stored: dict[str, list[tuple[Any, ...]]] = {}
    returned = first_load(monkeypatch)
    for route in ("on conflict", "plain insert", "index rebuild", "first load"):
        monkeypatch.setattr(contact_import, "REBUILD_FROM_ROWS", 0 if route == "index rebuild" else 10**9)
        monkeypatch.setattr(contact_import, "FIRST_LOAD_FROM_BYTES", 0 if route == "first load" else 10**12)
        monkeypatch.setattr(
            contact_import, "_insert_plain", (lambda *_a: None) if route == "on conflict" else plain_insert
        )
        with app.extensions["gatekeeper.db"].engine.begin() as conn:
            conn.execute(text("DELETE FROM contacts"))
        assert import_path(app, known)["created"] == 2
        assert import_path(app, mixed) == {"created": 6, "updated": 2, "unchanged": 0}
        stored[route] = register_rows(app)
        assert contact_indexes(app) == indexes  # rebuilt as the migrations made them
    assert stored["plain insert"] == stored["on conflict"]
    assert stored["index rebuild"] == stored["on conflict"]
    assert stored["first load"] == stored["on conflict"]
    assert [r[0] for r in stored["on conflict"]] == ["k1", "k2", "n1", "n2", "n3", None, "n5", "n6"]
    # The known file went into the empty register; the mixed one found it occupied.
    assert returned == ([2, None] if app.extensions["gatekeeper.db"].dialect == "sqlite" else [])


def many_rows(path: Any, rows: int, last: str = "") -> None:
    """Contacts whose facts keep changing (collection month, source, phone or not), so each
    batch numbers facts the earlier ones did not have."""
    lines = [
        f"c{n},u{n}@example.fr,{f'+336{n:08d}' if n % 7 == 0 else ''},,,"
        f"2025-{1 + n * 12 // rows:02d}-01,{'event' if n % 3 else 'direct'},Lyon\n"
        for n in range(rows)
    ]
    path.write_text(HEADER + "".join(lines) + last)


def test_a_first_load_in_chunks_stores_what_the_staged_route_stores(
    app: Flask, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    from gatekeeper.register import contact_import
    from gatekeeper.register.contact_plan import BATCH

    path = tmp_path / "big.csv"
    rows = 2 * BATCH + 10  # three batches, so three chunks
    many_rows(path, rows)
    indexes = contact_indexes(app)
    stored, returned = [], first_load(monkeypatch)
    for route in ("first load", "staged"):
        if route == "staged":
            monkeypatch.setattr(contact_import, "FIRST_LOAD_FROM_BYTES", 10**12)
        with app.extensions["gatekeeper.db"].engine.begin() as conn:
            conn.execute(text("DELETE FROM contacts"))
        assert import_path(app, path) == {"created": rows, "updated": 0, "unchanged": 0}
        stored.append(register_rows(app))
        assert contact_indexes(app) == indexes
    assert stored[0] == stored[1]
    sqlite = app.extensions["gatekeeper.db"].dialect == "sqlite"
    assert returned == ([rows] if sqlite else [])  # the chunks went in: no fallback


def test_a_bad_row_in_the_last_chunk_of_a_first_load_stores_nothing(
    app: Flask, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    from gatekeeper.errors import ValidationError
    from gatekeeper.register.contact_plan import BATCH

    first_load(monkeypatch)
    indexes = contact_indexes(app)
    path = tmp_path / "big.csv"
    many_rows(path, 2 * BATCH, last="c-last,broken@,,,,2025-01-01,direct,\n")
    with pytest.raises(ValidationError) as caught:
        import_path(app, path)
    assert caught.value.details[0]["row"] == 2 * BATCH + 1
    assert count(app, "contacts") == 0
    assert contact_indexes(app) == indexes


@pytest.mark.parametrize("route", ["index rebuild", "first load"])
def test_a_repeat_in_a_rebuilt_load_is_named_and_leaves_the_indexes_in_place(
    app: Flask, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    from gatekeeper.errors import ValidationError
    from gatekeeper.register import contact_import

    monkeypatch.setattr(contact_import, "REBUILD_FROM_ROWS", 0)
    if route == "first load":  # a unique index refuses a chunk: the staged route names the repeat
        first_load(monkeypatch)
    indexes = contact_indexes(app)
    path = tmp_path / "repeat.csv"
    path.write_text(MIXED + "n7,N2@example.fr,,,,2025-01-01,direct,\n")
    with pytest.raises(ValidationError) as caught:
        import_path(app, path)
    assert caught.value.details == [
        {"row": 9, "field": "email", "problem": "same email as row 3: a contact appears once per batch"}
    ]
    assert count(app, "contacts") == 0
    assert contact_indexes(app) == indexes


@pytest.mark.usefixtures("route")
def test_a_file_with_a_header_alone_stores_nothing(app: Flask, tmp_path: Any) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(HEADER + "\n")
    assert import_path(app, path) == {"created": 0, "updated": 0, "unchanged": 0}
    assert count(app, "contacts") == 0


def test_both_readers_store_the_same_register_with_the_keyed_hashes(
    app: Flask, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second process hashes the coordinates with the hasher it was handed through its pipe.
    from gatekeeper.register import contact_import

    path = tmp_path / "big.csv"
    many_rows(path, 50)
    stored = []
    for parallel_from in (10**12, 0):
        monkeypatch.setattr(contact_import, "PARALLEL_FROM_BYTES", parallel_from)
        with app.extensions["gatekeeper.db"].engine.begin() as conn:
            conn.execute(text("DELETE FROM contacts"))
        assert import_path(app, path)["created"] == 50
        stored.append(register_rows(app))
    assert stored[0] == stored[1]
    hasher = app.extensions["gatekeeper.context"].hasher
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        hashes = conn.execute(text("SELECT email, email_hash, phone, phone_hash FROM contacts ORDER BY id"))
        for email, email_hash, phone, phone_hash in hashes:
            assert email_hash == hasher.coordinate("email", email)
            assert phone_hash == (hasher.coordinate("phone", phone) if phone else None)


def test_the_refused_at_index_holds_only_refusals(app: Flask) -> None:
    # Partial (migration 0005): an imported contact, who has not refused, adds no entry to it.
    (definition,) = [d for n, d in contact_indexes(app) if n == "ix_contacts_refused_at"]
    assert "WHERE" in definition and "refused_at IS NOT NULL" in definition
