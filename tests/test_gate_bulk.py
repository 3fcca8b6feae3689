"""The bulk list path (gate/bulk.py, gate/listread.py) gives every row the verdict the
per-recipient reference gives it (engine.decide_recipients, the /api/v1/checks path), on both
databases: a varied register, lists with every kind of row the fast paths treat apart (plain,
upper-cased, padded, invalid, internationalised, repeated, blank, formula cells, quoted cells
that hand the rest of the file to the csv module), several campaigns and chunk sizes. The
verdict file is compared byte for byte with what csv.writer writes for the reference."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.csvio import write_safe_cell
from gatekeeper.gate.campaigns import parse_campaign
from gatekeeper.gate.engine import decide_recipients
from gatekeeper.gate.lists import decide_list
from gatekeeper.gate.recipients import coordinate_kind, parse_value

AS_OF = datetime(2026, 11, 22, 9, tzinfo=UTC)
N = 90
DOMAINS = ["example.fr", "gmail.com", "acme-corp.fr", "orange.fr", "laposte.net"]
LOCALS = ["user{i}", "contact", "info+promo{i}", "jean.dupont{i}", "sales"]
SUPPRESSION_REASONS = ["unsubscribe", "hard_bounce", "complaint", "manual", "erasure"]


def _email(i: int) -> str:
    local = LOCALS[i % 5].format(i=i)
    # Generic local parts are made unique by their domain.
    domain = DOMAINS[i % 5] if "{i}" in LOCALS[i % 5] else f"firm{i}.{DOMAINS[i % 5].rsplit('.', 1)[1]}"
    return f"{local}@{domain}"


def _phone(i: int) -> str:
    return f"+3361234{5000 + i:04d}"


def _contact(i: int) -> dict[str, Any]:
    contact: dict[str, Any] = {
        "external_id": f"crm-{i}",
        "collected_at": ["2022-01-10", "2024-03-05", "2025-06-10", "2026-02-01"][i % 4],
        "collected_by": "ACME SAS" if i % 7 else "Other SARL",
        "audience": "b2b" if i % 3 == 0 else "b2c",
        "source": {"type": ["direct", "direct", "broker", "scraped", "purchase"][i % 5]},
        "purpose": "recruitment" if i % 11 == 0 else "marketing",
        "timezone": "Europe/Paris",
    }
    if i % 3 == 0:
        contact["profession_tags"] = ["coffee"] if i % 2 else ["purchasing"]
    if i % 9 != 4:
        contact["email"] = _email(i)
    if i % 4 == 0 or i % 9 == 4:
        contact["phone"] = _phone(i)
    return contact


def _events(i: int) -> list[dict[str, Any]]:
    who = {"external_id": f"crm-{i}"}
    events: list[dict[str, Any]] = []
    for channel in ("email", "sms", "phone"):
        if (i + len(channel)) % 3 == 0:
            events.append(
                {
                    "contact": who,
                    "type": "consent",
                    "channel": channel,
                    "given": i % 8 != 1,
                    "occurred_at": ["2025-06-10", "2026-03-01", "2026-10-01"][i % 3],
                    "method": "checkbox",
                    "prechecked": i % 10 == 3,
                    "sender": "ACME SAS" if i % 6 else "Someone Else",
                }
            )
    if i % 4 == 1:
        events.append(
            {
                "contact": who,
                "type": "purchase",
                "occurred_at": "2025-07-01",
                "product_category": ["coffee_machines", "garden_tools"][i % 2],
                "seller": "ACME SAS",
            }
        )
    if i % 10 == 2:
        events.append(
            {
                "contact": who,
                "type": "contract",
                "kind": "subscription",
                "starts_at": "2026-01-01",
                "ends_at": None,
                "product_category": "coffee_capsules",
            }
        )
    if i % 12 == 5:
        events.append({"contact": who, "type": "opposition", "channels": "all", "occurred_at": "2026-04-01"})
    if i % 8 == 6:
        events += [
            {
                "contact": who,
                "type": "call_attempt",
                "outcome": "no_answer",
                "occurred_at": f"2026-11-2{d}T10:30:00+01:00",
            }
            for d in range(i % 6)
        ]
    return events


def _suppressions() -> list[dict[str, Any]]:
    entries = []
    for i in range(0, N, 4):
        coordinate = {"email": _email(i)} if i % 9 != 4 else {"phone": _phone(i)}
        entries.append(
            {
                **coordinate,
                "reason": SUPPRESSION_REASONS[i % 5],
                "channels": "all" if i % 8 == 0 else ["email", "sms"],
                # Some objections come before a newer consent (can be lifted), some after.
                "occurred_at": "2025-01-01" if i % 3 else "2026-11-01",
            }
        )
    for i in range(N, N + 12, 3):  # strangers: suppressed without being in the register
        entries.append(
            {
                "email": f"stranger{i}@example.fr",
                "reason": "unsubscribe",
                "channels": "all",
                "occurred_at": "2026-01-01",
            }
        )
        entries.append(
            {"phone": _phone(i), "reason": "complaint", "channels": "all", "occurred_at": "2026-01-01"}
        )
    return entries


# Twins: contacts alike in everything the memo key reads first, apart in what decides.
# lift-1 objected after its consent, lift-2 consented again after objecting; call-1 was called
# five times in the D223-9 window, call-2 twice.
TWINS = {
    "lift-1": ("lift1@example.fr", "+33612349901", "2026-03-01", 0),
    "lift-2": ("lift2@example.fr", "+33612349902", "2026-10-01", 0),
    "call-1": ("call1@example.fr", "+33612349903", "2026-10-01", 5),
    "call-2": ("call2@example.fr", "+33612349904", "2026-10-01", 2),
}


def _twins() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    contacts, events, entries = [], [], []
    for name, (email, phone, consented, calls) in TWINS.items():
        who = {"external_id": name}
        contacts.append(
            {**who, "email": email, "phone": phone, "collected_at": "2025-06-10", "collected_by": "ACME SAS"}
        )
        for channel in ("email", "sms", "phone"):
            events.append(
                {
                    "contact": who,
                    "type": "consent",
                    "channel": channel,
                    "given": True,
                    "occurred_at": consented,
                    "sender": "ACME SAS",
                    "method": "oral",
                }
            )
        events += [
            {
                "contact": who,
                "type": "call_attempt",
                "outcome": "no_answer",
                "occurred_at": f"2026-11-1{d}T10:30:00+01:00",
            }
            for d in range(calls)
        ]
        if name.startswith("lift"):
            for coordinate in ({"email": email}, {"phone": phone}):
                entries.append(
                    {**coordinate, "reason": "unsubscribe", "channels": "all", "occurred_at": "2026-05-01"}
                )
    return contacts, events, entries


def seed_register(client: FlaskClient, auth: dict[str, str]) -> None:
    twins, twin_events, twin_entries = _twins()
    contacts = [_contact(i) for i in range(N)] + twins
    res = client.post("/api/v1/contacts", headers=auth, json={"contacts": contacts})
    assert res.status_code == 200, res.json
    events = [e for i in range(N) for e in _events(i)] + twin_events
    res = client.post("/api/v1/events", headers=auth, json={"events": events})
    assert res.status_code == 200, res.json
    res = client.post("/api/v1/suppressions", headers=auth, json={"entries": _suppressions() + twin_entries})
    assert res.status_code == 200, res.json


def _spelling(value: str, i: int) -> str:
    # Mostly plain (whole chunks take the fast path), sometimes what only the slow path reads.
    if i % 17 == 0:
        return f"  {value} "
    if i % 29 == 0:
        return "\t" + value
    return value.upper() if i % 3 == 0 else value


def _list_rows(kind: str) -> list[list[str]]:
    """Recipients in list order, with a note cell; some rows repeat earlier ones."""
    rows: list[list[str]] = []
    for i in range(N + 12):
        if kind == "email":
            value = _email(i) if i < N else f"stranger{i}@example.fr"
        elif kind == "phone":
            value = _phone(i) if i % 2 else f"06 12 34 {50 + i // 100:02d} {i % 100:02d}"
        else:
            value = f"crm-{i}"
        rows.append([_spelling(value, i), f"note {i}"])
    for name, (email, phone, _consented, _calls) in TWINS.items():
        rows.append([{"email": email, "phone": phone}.get(kind, name), name])
    rows += [
        ["not an address", "x"],
        ["", "empty coordinate"],
        ["josé@exämple.fr", "idn"],
        ["a--b@example.fr", "dashes"],
    ]
    rows += [["user7@xn--exmple-cua.fr", "punycode"], ["user7@exämple.fr", "same, unicode"]]
    rows += [["user@localhost", "no tld"], ["user@example.test", "special"], ["\x00@example.fr", "nul"]]
    rows += [["+33 6 12 34 50 07", "spaced phone"], ["0033612345008", "00 prefix"], ["12", "short"]]
    # Repeats, some far from their first row (a later chunk).
    rows += [rows[3], rows[40], [rows[7][0].upper(), "repeat upper"], rows[95]]
    return rows


def _write(
    path: Path, header: list[str], rows: list[list[str]], plain_until: int, delimiter: str = ","
) -> None:
    """Rows after ``plain_until`` carry formula cells, then quoted cells, so the list goes
    through the plain, the cell-by-cell and the csv-module paths."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        for n, row in enumerate(rows):
            if n == plain_until // 2:
                fh.write("\r\n")  # a blank record
            note = (
                ["=1+1", "+33 6 12", "-5", "@home", "a,b", 'say "hi"'][n % 6] if n > plain_until else row[1]
            )
            w.writerow([row[0], note])


CAMPAIGNS = {
    "email": {"channel": "email", "purpose": "commercial", "product_category": "coffee_capsules"},
    "email_b2b": {"channel": "email", "purpose": "commercial", "topic_tags": ["coffee"], "partner": None},
    "sms": {"channel": "sms", "purpose": "commercial", "product_category": "coffee_capsules"},
    "phone": {"channel": "phone", "purpose": "commercial", "product_category": "coffee_capsules"},
    "postal": {"channel": "postal", "purpose": "commercial", "product_category": "coffee_capsules"},
}


@pytest.mark.parametrize(
    ("campaign_name", "column", "chunk", "preload"),
    [
        ("email", "email", 7, True),
        ("email", "email", 7, False),
        ("email", "email", 5000, True),
        ("email_b2b", "email", 13, True),
        ("sms", "phone", 7, True),
        ("phone", "phone", 11, False),
        ("email", "external_id", 9, True),
        ("sms", "external_id", 9, False),
        ("postal", "email", 17, True),
        ("email", "email;", 7, True),  # a list with ";" for delimiter
    ],
)
def test_every_row_gets_the_verdict_of_the_per_recipient_reference(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    campaign_name: str,
    column: str,
    chunk: int,
    preload: bool,
) -> None:
    # Suppressions read once for the run, or probed chunk by chunk (a list small next to them).
    monkeypatch.setattr("gatekeeper.gate.bulkread.PRELOAD_RATIO", 0 if preload else 1e9)
    # SQLite: the register read by reader processes (as for a large list), or in this process;
    # the processes read it whole (a list about as long as the register: chunks of 7) or look
    # each chunk up by index (chunks of 11).
    monkeypatch.setattr("gatekeeper.gate.bulkread.SQLITE_READERS_FROM", 0 if chunk in (7, 11) else 10**9)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SCAN_RATIO", 0 if chunk == 7 else 1e9)
    started = _count_reader_processes(monkeypatch)
    seed_register(client, auth)
    raw = {**CAMPAIGNS[campaign_name], "sender": "ACME SAS", "send_at": "2026-11-24T11:00:00+01:00"}
    campaign, _ = parse_campaign({k: v for k, v in raw.items() if v is not None}, AS_OF)
    column, delimiter = column.rstrip(";"), ";" if column.endswith(";") else ","
    kind = column if column == "external_id" else coordinate_kind(campaign.channel)
    rows = _list_rows(kind)
    src, out = tmp_path / "list.csv", tmp_path / "verdicts.csv"
    _write(src, [column.capitalize(), "Note"], rows, plain_until=len(rows) - 12, delimiter=delimiter)
    ctx = app.extensions["gatekeeper.context"]
    with app.extensions["gatekeeper.db"].session_scope() as session:
        items: list[tuple[int, str, str]] = []
        summary = decide_list(
            session, ctx, campaign, AS_OF, src, out, items=items, chunk=chunk, unwritten=True
        )
        expected, reference_items, counts = _reference(session, ctx, campaign, src, kind, delimiter)
    # Reader processes: when the register is read whole (both databases), or on SQLite when asked.
    sqlite = app.extensions["gatekeeper.db"].dialect == "sqlite"
    assert bool(started) == (chunk == 7 or (sqlite and chunk == 11))
    assert out.read_bytes().decode("utf-8-sig") == expected
    assert items == reference_items
    assert {k: summary[k] for k in counts} == counts
    decisions = {line.rsplit(delimiter, 2)[1] for line in expected.splitlines()[1:]}
    assert len(summary["by_reason"]) >= 3 and decisions <= {"allow", "block", "decision"}


def _count_reader_processes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The reader processes started from now on (gate/sqliteworker.py), in a list."""
    from gatekeeper.gate import bulkread

    started: list[object] = []
    start = bulkread._ReaderProcess.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        started.append(self)
        start(self, *args, **kwargs)

    monkeypatch.setattr(bulkread._ReaderProcess, "__init__", counted)
    return started


def test_a_session_that_has_written_is_read_by_itself_only(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other connections would not see what the session wrote and has not committed: the
    list is then read on the session's own connection, unless the caller says it wrote
    nothing (and on PostgreSQL the server tells)."""
    monkeypatch.setattr("gatekeeper.gate.bulkread.SQLITE_READERS_FROM", 0)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SCAN_RATIO", 0)
    started = _count_reader_processes(monkeypatch)
    seed_register(client, auth)
    src, out = tmp_path / "list.csv", tmp_path / "verdicts.csv"
    _write(src, ["Email", "Note"], _list_rows("email"), plain_until=10_000)
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "sender": "ACME SAS"}, AS_OF)
    ctx = app.extensions["gatekeeper.context"]
    with app.extensions["gatekeeper.db"].session_scope() as session:
        # Not committed: these contacts are strangers for this session only.
        session.execute(text("DELETE FROM contacts WHERE id % 3 = 0"))
        summary = decide_list(session, ctx, campaign, AS_OF, src, out, chunk=7)
        expected, _items, counts = _reference(session, ctx, campaign, src, "email", ",")
        session.rollback()
    assert not started
    assert out.read_bytes().decode("utf-8-sig") == expected
    assert {k: summary[k] for k in counts} == counts
    assert summary["by_reason"]["contact.unknown"] > 12  # the deleted ones among them


def test_a_reader_process_that_fails_fails_the_list_and_leaves_no_verdict_file(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatekeeper.errors import GatekeeperError
    from gatekeeper.gate.bulkread import BulkReader

    monkeypatch.setattr("gatekeeper.gate.bulkread.SQLITE_READERS_FROM", 0)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SCAN_RATIO", 0)

    def broken_scan(self: BulkReader, readers: list[Any], want_ids: bool) -> None:
        sql = "SELECT no_such_column FROM contacts"
        supp = (self.suppressions_sql, self.suppressions_params)
        for k, reader in enumerate(readers):
            reader.start(
                ("scan", sql, [], *supp, "x", k, 2, 2, want_ids, self.rows_sql, self.row_params)
            )

    monkeypatch.setattr(BulkReader, "_scan", broken_scan)
    seed_register(client, auth)
    src, out = tmp_path / "list.csv", tmp_path / "verdicts.csv"
    _write(src, ["Email", "Note"], _list_rows("email"), plain_until=10_000)
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "sender": "ACME SAS"}, AS_OF)
    ctx = app.extensions["gatekeeper.context"]
    with (
        app.extensions["gatekeeper.db"].session_scope() as session,
        pytest.raises(GatekeeperError, match=r"reader process failed.*no_such_column"),
    ):
        decide_list(session, ctx, campaign, AS_OF, src, out, chunk=7, unwritten=True)
    assert not out.exists() and not out.with_suffix(".partial").exists()


def _reference(
    session: Any, ctx: Any, campaign: Any, src: Path, kind: str, delimiter: str
) -> tuple[str, list[tuple[int, str, str]], dict[str, Any]]:
    """The verdict file, the items and the counts the reference makes of the same list."""
    with src.open(newline="", encoding="utf-8-sig") as fh:
        records = list(csv.reader(fh, delimiter=delimiter))
    header, data = records[0], [r for r in records[1:] if r and any(c.strip() for c in r)]
    recipients = [parse_value(n, kind, r[0], ctx.region) for n, r in enumerate(data)]
    staged, decided = decide_recipients(session, ctx, campaign, AS_OF, recipients)
    text = io.StringIO(newline="")
    w = csv.writer(text, delimiter=delimiter)
    w.writerow([write_safe_cell(h) for h in header] + ["decision", "reasons"])
    items = []
    allowed = 0
    for d in decided:
        reasons = " ".join(d.verdict.reasons)
        w.writerow([write_safe_cell(c) for c in data[d.row]] + [d.verdict.decision, reasons])
        if d.contact_id is not None:
            items.append((d.contact_id, d.verdict.decision, reasons))
        allowed += d.verdict.decision == "allow"
    counts = {"recipients": staged.total, "duplicates": staged.duplicates, "allowed": allowed}
    return text.getvalue(), items, counts


TRICKY = [
    "a@b.fr",
    "a.b@c.fr",
    ".a@b.fr",
    "a.@b.fr",
    "a..b@c.fr",
    "a@-b.fr",
    "a@b-.fr",
    "a@b.c",
    "a@b.c0m",
    "a@b.example",
    "a@b.test",
    "a@b.testing",
    "a@localhost",
    "a+tag@b.fr",
    "o'neil@b.fr",
    "a@" + "b" * 63 + ".fr",
    "a@" + "b" * 64 + ".fr",
    "x" * 64 + "@b.fr",
    "x" * 65 + "@b.fr",
    "a@" + ".".join(["b" * 60] * 4) + ".fr",
    "a@" + ".".join(["b" * 61] * 4) + ".fr",
    "a@xn--bcher-kva.fr",
    "a--b@c.fr",
    "a@b..fr",
    "a@b.fr.",
    "@b.fr",
    "a@",
    "a@b@c.fr",
]


@pytest.mark.parametrize("address", TRICKY)
def test_the_chunk_pattern_accepts_only_what_normalise_email_returns_unchanged(address: str) -> None:
    from gatekeeper.gate.bulkcoords import EMAILS, MAX_EMAIL
    from gatekeeper.normalize import normalise_email

    for joined in (address, f"a@b.fr\n{address}", f"{address}\nz@y.fr"):
        if EMAILS.fullmatch(joined) and "--" not in joined and len(address) <= MAX_EMAIL:
            assert normalise_email(address) == address
    if address in ("a@b.fr", "a.b@c.fr", "a+tag@b.fr", "o'neil@b.fr"):
        assert EMAILS.fullmatch(f"{address}\nz@y.fr")  # the common case takes the fast path


TEXTS = {
    "unix": "a@b.fr,x\nc@d.fr,y\n\nlast@e.fr,z",
    "windows": "a@b.fr,x\r\nc@d.fr,y\r\n\r\nlast@e.fr,z\r\n",
    "old mac": "a@b.fr,x\rc@d.fr,y\r\rlast@e.fr,z\r",
    "mixed": "a@b.fr,x\r\nc@d.fr,y\n\rlast@e.fr,z\n",
    "short rows": "a@b.fr\n,\nc@d.fr,y,extra\n",
    "formulas": "a@b.fr,=SUM(A1)\n+33612345678,-5\n@x,+1 2\nc@d.fr,\t1\n",
    "quoted later": 'a@b.fr,x\nb@c.fr,y\n"q@r.fr","multi\nline"\nz@y.fr,w\n',
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_the_list_reader_reads_and_writes_what_the_csv_module_would(name: str) -> None:
    from gatekeeper.gate.listread import ListReader, Written, verdict_text

    text = TEXTS[name]
    expected_rows = list(csv.reader(io.StringIO(text, newline="")))
    kept = [r for r in expected_rows if any(c.strip() for c in r)]
    out = io.StringIO(newline="")
    csv.writer(out).writerows([[write_safe_cell(v) for v in r] + ["allow", "basis.consent"] for r in kept])
    written: list[Written] = [(",allow,basis.consent\r\n", "allow", "basis.consent")]
    for size in (1, 2, 100):
        chunks = list(ListReader(io.StringIO(text, newline=""), ",").chunks(size))
        # A blank line is [] for the csv module and [""] split: both are blank, never written.
        assert [r if r != [""] else [] for c in chunks for r in c.rows] == expected_rows
        picked = [[0 if any(v.strip() for v in r) else None for r in c.rows] for c in chunks]
        got = "".join(verdict_text(c, ",", p, written, None) for c, p in zip(chunks, picked, strict=True))
        assert got == out.getvalue()


def test_a_failure_while_writing_stops_the_probe_threads_and_leaves_no_verdict_file(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path
) -> None:
    seed_register(client, auth)
    src, out = tmp_path / "list.csv", tmp_path / "verdicts.csv"
    _write(src, ["Email", "Note"], _list_rows("email"), plain_until=10_000)
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "sender": "ACME SAS"}, AS_OF)
    minted: list[int | None] = []

    def minter(contact_id: int | None) -> tuple[str, str]:
        minted.append(contact_id)
        if len(minted) > 3:
            raise RuntimeError("the signer failed")
        return "u", "p"

    ctx = app.extensions["gatekeeper.context"]
    with app.extensions["gatekeeper.db"].session_scope() as session:
        with pytest.raises(RuntimeError, match="signer"):
            decide_list(session, ctx, campaign, AS_OF, src, out, links=minter, chunk=7)
        assert not out.exists() and not out.with_suffix(".partial").exists()
        # The session's connection is free again: no probe thread is still using it.
        assert session.execute(text("SELECT count(*) FROM contacts")).scalar_one() == N + len(TWINS)


def test_only_addresses_the_candidate_pattern_flags_can_be_generic_or_personal(app: Flask) -> None:
    """The bulk path asks classify_email only about the addresses its pattern flags; every
    address the domain calls generic or personal must be among them (a broader rule there
    must broaden the pattern: this test says so)."""
    from gatekeeper.domain import classify_email
    from gatekeeper.gate.bulkcoords import Coordinates

    policy = app.extensions["gatekeeper.context"].policy
    locals_ = [*sorted(policy.generic_local_parts)[:12], "jean", "contactx", "xinfo", "a.b"]
    domains = [*sorted(policy.personal_mailbox_domains)[:12], "example.fr", "mail.gmail.com", "gmail.com.fr"]
    addresses = [f"{p}{t}@{d}" for p in locals_ for t in ("", "+promo", ".x") for d in domains]
    coordinates = Coordinates("email", "FR", policy)
    candidates = coordinates.candidates("\n".join(addresses))
    special = [a for a in addresses if classify_email(a, policy) != "other"]
    assert special and set(special) <= candidates


def test_first_occurrences_are_the_same_whichever_way_a_chunk_is_read() -> None:
    """BulkDecider._fresh finds a chunk of valid coordinates' first occurrences with set and
    dict operations, other chunks record by record: both agree with the plain definition
    (repeats within and across chunks, invalid coordinates each their own recipient, blank
    records none)."""
    from gatekeeper.gate.bulk import BulkDecider

    chunks: list[list[str | None]] = [
        ["a", "b", "c"],
        ["d", "b", "e", "e", "a", "f"],
        ["g", None, "", "h", "g", None, "c"],
        ["h", "h"],
        ["i"],
    ]
    decider = object.__new__(BulkDecider)
    decider.seen, decider.total, decider.duplicates = set(), 0, 0
    seen: set[str] = set()
    repeats = 0
    for values in chunks:
        fresh, records = decider._fresh(values)
        expected: list[int] = []
        for r, v in enumerate(values):
            if v and v in seen:
                repeats += 1
            elif v != "":
                expected.append(r)
                if v:
                    seen.add(v)
        assert (list(range(len(values))) if records is None else records) == expected
        assert fresh == [values[r] for r in expected]
    assert decider.duplicates == repeats == 7
    assert decider.total == sum(1 for c in chunks for v in c if v != "")


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_the_formula_pattern_flags_a_chunk_exactly_when_a_cell_would_be_neutralised(delimiter: str) -> None:
    """A plain chunk is written as its lines only when no cell of it would be changed by
    write_safe_cell (listread._formula_cell, searched after a newline put in front)."""
    import random
    import re

    from gatekeeper.gate.listread import _formula_cell

    pattern = _formula_cell(delimiter)
    alphabet = f"{delimiter}\n=@\t+-09 .a"
    rng = random.Random(7)
    flagged = 0
    for _ in range(20_000):
        chunk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        cells = [c for line in re.split(r"\r\n|\r|\n", chunk) for c in line.split(delimiter)]
        changed = any(write_safe_cell(c) != c for c in cells)
        assert (pattern.search("\n" + chunk) is not None) == changed, repr(chunk)
        flagged += changed
    assert 1_000 < flagged < 19_000  # both kinds of chunks were tried


def test_a_chunk_without_personal_domains_flags_its_generic_addresses_only(app: Flask) -> None:
    """Most chunks have no personal mailbox domain: their candidates are the generic local
    parts (with or without a "+tag"), found at the start of each line."""
    from gatekeeper.gate.bulkcoords import Coordinates

    policy = app.extensions["gatekeeper.context"].policy
    generic = sorted(policy.generic_local_parts)[:5]
    addresses = [f"{g}@firm{i}.fr" for i, g in enumerate(generic)] + [f"{generic[0]}+x@b.fr"]
    others = ["jean@firm.fr", f"x{generic[1]}@firm.fr", f"a.{generic[2]}@b.fr", f"b@{generic[3]}.fr"]
    for order in (addresses + others, others + addresses):
        assert Coordinates("email", "FR", policy).candidates("\n".join(order)) == set(addresses)


@pytest.mark.parametrize("channel", ["email", "sms", "phone", "postal"])
def test_the_suppressions_read_whole_are_the_entries_the_per_chunk_probe_reads(
    app: Flask, client: FlaskClient, auth: dict[str, str], channel: str
) -> None:
    """The database makes and chooses the entries when the suppressions are read whole (the
    parent and the reader processes run the same statement); the per-chunk probe does it in
    Python: the same entries either way, so the same canonical strings in the keys."""
    from gatekeeper.gate.bulkread import BulkReader
    from gatekeeper.gate.engine import Decider

    seed_register(client, auth)
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "channel": channel, "sender": "ACME SAS"}, AS_OF)
    ctx = app.extensions["gatekeeper.context"]
    with app.extensions["gatekeeper.db"].session_scope() as session:
        ref = Decider(session, ctx, campaign, AS_OF)
        whole = BulkReader(session, ref, "email").suppressions()
        hashes = [h for (h,) in session.execute(text("SELECT coord_hash FROM suppressions"))]
        probed = ref.probe.suppressions(ref.as_of_v, hashes)
    assert whole and {h: sorted(e) for h, e in whole.items()} == {h: sorted(e) for h, e in probed.items()}
    if channel == "postal":  # some suppressions cover email and sms only
        assert len(whole) < len(set(hashes))


def test_the_register_id_range_is_two_index_descents_not_a_read_of_every_contact(
    sqlite_template: Path,
) -> None:
    """Before the reader processes split the register by id, its range is asked: ``min(id),
    max(id)`` in one select made SQLite read every contact through an index (PERFORMANCE.md:
    the filter's memory and time)."""
    import sqlite3

    from gatekeeper.gate.bulkread import ID_RANGE_SQL

    conn = sqlite3.connect(sqlite_template)
    try:
        steps = " | ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + ID_RANGE_SQL))
    finally:
        conn.close()
    assert "SCAN contacts" not in steps, steps
    assert steps.count("SEARCH contacts") == 2, steps


# -- the register changing while a list is decided ----------------------------------------------
# Alike contacts (one situation, so one memo key); the second is erased while the list is
# decided. The newcomer is created after the deciding session's first read (its snapshot, on
# SQLite) and before the register is read for the list.
ALIKE = ["alike-a@example.fr", "alike-b@example.fr", "alike-c@example.fr"]
ERASED = ALIKE[1]
NEWCOMER = "newcomer@example.fr"
MOVING, MOVED = "moving@example.fr", "moved@example.fr"  # a rectified address: before, after


def _alike(email: str) -> dict[str, Any]:
    return {
        "external_id": email.split("@", 1)[0],
        "email": email,
        "collected_at": "2026-02-01",
        "collected_by": "ACME SAS",
        "audience": "b2c",
        "source": {"type": "direct"},
        "timezone": "Europe/Paris",
    }


def _moving() -> dict[str, Any]:
    return {**_alike(MOVING), "collected_by": "Other SARL"}  # a situation of its own


def _add_contacts(client: FlaskClient, auth: dict[str, str], contacts: list[dict[str, Any]]) -> None:
    res = client.post("/api/v1/contacts", headers=auth, json={"contacts": contacts})
    assert res.status_code == 200, res.json


def _change_after_first_read(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """A contact created, another's address rectified (the register's own code)."""
    from gatekeeper.proof.rights import rectify

    _add_contacts(client, auth, [{**_alike(NEWCOMER), "audience": "b2b", "collected_at": "2025-06-10"}])
    db, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]
    with db.session_scope() as session:
        found = session.execute(text("SELECT id FROM contacts WHERE email = :e"), {"e": MOVING})
        rectify(session, ctx, found.scalar_one(), {"email": MOVED}, AS_OF)


def _erase(app: Flask, email: str) -> None:
    """An erasure request, committed on a session of its own (the register's own code)."""
    from gatekeeper.proof.rights import erase

    db, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]
    with db.session_scope() as session:
        found = session.execute(text("SELECT id FROM contacts WHERE email = :e"), {"e": email})
        erase(session, ctx, found.scalar_one(), AS_OF, archive=None)


def _race_list(path: Path, values: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "note"])
        w.writerows([v, f"row {n}"] for n, v in enumerate(values))
    return path


def _reference_verdicts(session: Any, ctx: Any, campaign: Any, src: Path) -> list[tuple[str, str, str]]:
    """(coordinate cell, decision, reasons) of each first occurrence, by the reference."""
    with src.open(newline="", encoding="utf-8") as fh:
        data = list(csv.reader(fh))[1:]
    recipients = [parse_value(n, "email", r[0], ctx.region) for n, r in enumerate(data)]
    _staged, decided = decide_recipients(session, ctx, campaign, AS_OF, recipients)
    return [(data[d.row][0], d.verdict.decision, " ".join(d.verdict.reasons)) for d in decided]


def _bulk_verdicts(decider: Any, results: list[Any]) -> list[tuple[str, str, str]]:
    """The same from the bulk path's chunk verdicts."""
    got = []
    for verdicts in results:
        picked, _contacts = verdicts.per_record()
        for r, i in enumerate(picked):
            if i is not None:
                _suffix, decision, reasons = decider.written[i]
                got.append((verdicts.chunk.rows[r][0], decision, reasons))
    return got


def _bulk_contacts(results: list[Any]) -> dict[str, int | None]:
    """The contact each first occurrence's verdict names (its proof item's), by coordinate cell."""
    named: dict[str, int | None] = {}
    for verdicts in results:
        picked, contacts = verdicts.per_record()
        for r, i in enumerate(picked):
            if i is not None:
                named[verdicts.chunk.rows[r][0]] = contacts[r]
    return named


def _race_values() -> list[str]:
    strangers = ["stranger1@example.fr", "stranger2@example.fr"]
    # Chunks of 2: the erased contact, the newcomer and the moved one are new situations of the
    # second and third.
    values = [*strangers, ERASED, NEWCOMER, MOVED, ALIKE[0], ALIKE[2], MOVING]
    return values + [_email(i) for i in range(N)] + [ERASED]


def test_a_contact_erased_or_created_while_the_register_is_read_whole_is_decided_as_the_readers_read_it(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader processes code every contact from their snapshot, and hand the parent the row
    each new code is decided on from the same snapshot: a contact erased after the scan (the
    parent would no longer find it: PostgreSQL), or created after the parent's own snapshot
    began (it would not find it yet: SQLite) no longer fails the list. Both are decided as the
    readers read the register, like every other contact: the reference's verdicts on the
    register as it was between the two changes."""
    from gatekeeper.gate.bulk import BulkDecider
    from gatekeeper.gate.listread import ListReader

    monkeypatch.setattr("gatekeeper.gate.bulkread.PRELOAD_RATIO", 0)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SQLITE_READERS_FROM", 0)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SCAN_RATIO", 0)
    # One chunk read ahead: the second chunk is decided after the third is read, the first
    # chunk's answer (so the scan) done by then.
    monkeypatch.setattr("gatekeeper.gate.bulk.READ_AHEAD", 1)
    started = _count_reader_processes(monkeypatch)
    seed_register(client, auth)
    _add_contacts(client, auth, [*map(_alike, ALIKE), _moving()])
    src = _race_list(tmp_path / "list.csv", _race_values())
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "sender": "ACME SAS"}, AS_OF)
    db, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]

    def erasing(chunks: Any) -> Any:
        for n, chunk in enumerate(chunks):
            if n == 2:  # the second chunk looked up, not decided yet
                _erase(app, ERASED)
            yield chunk

    with db.session_scope(read_only=True) as session:
        decider = BulkDecider(
            session, ctx, campaign, AS_OF, "email", chunk=2, expected_rows=200, unwritten=True
        )
        _change_after_first_read(app, client, auth)
        with db.session_scope(read_only=True) as between:
            expected = _reference_verdicts(between, ctx, campaign, src)
        with src.open(newline="", encoding="utf-8") as fh:
            fh.readline()  # the header, read before the chunks (gate.lists)
            results = list(decider.run(erasing(ListReader(fh, ",").chunks(2)), 0))
    assert len(started) == 2
    got = _bulk_verdicts(decider, results)
    assert got == expected
    verdicts = {v: (decision, reasons) for v, decision, reasons in got}
    for found in (ERASED, NEWCOMER, MOVED):
        assert "contact.unknown" not in verdicts[found][1]
    assert "contact.unknown" in verdicts[MOVING][1]
    assert verdicts[ERASED] == verdicts[ALIKE[0]]
    with db.session_scope(read_only=True) as after:  # the erasure did happen meanwhile
        assert _reference_verdicts(after, ctx, campaign, src) != expected


def test_a_contact_changed_between_a_chunk_lookup_and_its_decision_is_decided_as_it_is_now(
    app: Flask, client: FlaskClient, auth: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looked up chunk by chunk on another connection (SQLite: a reader process; PostgreSQL: a
    second connection), a contact's full row is read later, on the session's connection: the
    erased contact (PostgreSQL) or the newcomer the session cannot see yet (SQLite) is decided
    as the session reads it then, and the alike contacts keep their key's verdict. The phases
    of the bulk path are driven directly: both chunks looked up, the contact erased, then both
    decided."""
    import threading
    from concurrent.futures import Future

    from gatekeeper.gate import bulk
    from gatekeeper.gate.bulkread import Lane
    from gatekeeper.gate.listread import ListReader
    from gatekeeper.gate.probe import RegisterProbe

    monkeypatch.setattr("gatekeeper.gate.bulkread.PRELOAD_RATIO", 1e9)  # suppressions per chunk
    monkeypatch.setattr("gatekeeper.gate.bulkread.SQLITE_READERS_FROM", 0)
    monkeypatch.setattr("gatekeeper.gate.bulkread.SCAN_RATIO", 1e9)
    seed_register(client, auth)
    _add_contacts(client, auth, [*map(_alike, ALIKE), _moving()])
    # The first chunk's two alike contacts share a key, the erased one last (so it is the one
    # whose full row is read first); the newcomer is the second chunk.
    values = [ALIKE[0], ERASED, NEWCOMER, MOVED, ALIKE[2], MOVING] + [_email(i) for i in range(N)]
    src = _race_list(tmp_path / "list.csv", values)
    campaign, _ = parse_campaign({**CAMPAIGNS["email"], "sender": "ACME SAS"}, AS_OF)
    db, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]
    with db.session_scope(read_only=True) as session:
        decider = bulk.BulkDecider(session, ctx, campaign, AS_OF, "email", chunk=2, expected_rows=200)
        _change_after_first_read(app, client, auth)
        more = decider.reader.more_connections(200, False, True, True)
        try:
            conn = more[0].driver_connection
            lane = Lane(conn, RegisterProbe(session, "email", conn), threading.Lock())
            with src.open(newline="", encoding="utf-8") as fh:
                fh.readline()  # the header
                pending = []
                for chunk in ListReader(fh, ",").chunks(2):
                    values_, candidates = decider.coordinates.of(chunk, 0)
                    fresh, records = decider._fresh(values_)
                    looked_up: Future[Any] = Future()
                    looked_up.set_result(decider._gather_on(fresh, lane))
                    pending.append(bulk._Pending(chunk, fresh, records, candidates, len(fresh), looked_up))
                    if len(pending) == 2:
                        _erase(app, ERASED)
            results = [decider._finish(work) for work in pending]
        finally:
            for extra in more:
                extra.close()
        expected = _reference_verdicts(session, ctx, campaign, src)  # as the session reads it now
        ids_now = {e: i for e, i in session.execute(text("SELECT email, id FROM contacts"))}
    assert more
    got = _bulk_verdicts(decider, results)
    # Each record's proof item names the contact it was decided on: the erased contact
    # (PostgreSQL) and the ones the session cannot see yet (SQLite) name none, not the contact
    # their lookup found.
    named = _bulk_contacts(results)
    assert {v: i for v, i in named.items() if v != MOVING} == {
        v: ids_now.get(v) for v in named if v != MOVING
    }
    assert named[ERASED if db.dialect != "sqlite" else NEWCOMER] is None
    # The rectified contact's old address is named by no contact in the lookup (on both
    # databases: it came after the change), though SQLite's session still reads it.
    assert [g for g in got if g[0] != MOVING] == [e for e in expected if e[0] != MOVING]
    verdicts = {v: (decision, reasons) for v, decision, reasons in got}
    assert verdicts[MOVING] == ("block", "contact.unknown")
    sqlite = db.dialect == "sqlite"
    # PostgreSQL reads the erasure at once; SQLite's session reads its snapshot, without the
    # newcomer nor the rectified address.
    assert ("contact.unknown" in verdicts[ERASED][1]) != sqlite
    assert ("contact.unknown" in verdicts[NEWCOMER][1]) == sqlite
    assert ("contact.unknown" in verdicts[MOVED][1]) == sqlite
    assert verdicts[ALIKE[0]] == verdicts[ALIKE[2]]
