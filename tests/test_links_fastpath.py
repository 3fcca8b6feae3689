"""The fast path's own machinery, on SQLite and PostgreSQL: the unsubscribe page that reads
nothing, the kept connections of the clicks' drainer, and the spooled clicks' batch handler,
which must leave the contact row exactly as ``clocks.refresh`` would in every case (a fresh
click, an older one, a batch handed twice, a refused reconsent, no stored clock, a running
contract, a row changed after the click) and skip what it cannot use."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_links_helpers import FIREFOX, TODAY, add_contact, erase, set_clock, signer, stored_events

from gatekeeper.app import create_app
from gatekeeper.links import links_of, spooled
from gatekeeper.links.connection import LinkConnections
from gatekeeper.links.records import USER_AGENT_MAX, ContactCard, Raw, load_card
from gatekeeper.links.service import Skeleton
from gatekeeper.links.spooled import click_record, parse_click
from gatekeeper.register import clocks
from gatekeeper.spool import SpoolRecord, pending
from gatekeeper.sqlbulk import ts_value

SHOP = "https://shop.example/offre?id=42"
Drain = Callable[[], dict[str, int]]


@pytest.fixture
def paul(app: Flask, client: FlaskClient, auth: dict[str, str]) -> int:
    set_clock(app, TODAY)
    return add_contact(client, auth)


def connections(app: Flask) -> LinkConnections:
    """Kept connections as the clicks' drainer holds them (``spooled.handler``), one per app."""
    pool: LinkConnections | None = app.extensions.get("test.link_connections")
    if pool is None:
        pool = LinkConnections(app.extensions["gatekeeper.db"].engine)
        app.extensions["test.link_connections"] = pool
    return pool


@contextmanager
def borrowed(app: Flask) -> Iterator[Raw]:
    pool = connections(app)
    raw = pool.borrow()
    try:
        yield raw
    finally:
        pool.give_back(raw)


def contact_row(app: Flask, cid: int) -> tuple[Any, ...]:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        return tuple(conn.execute(text("SELECT * FROM contacts WHERE id = :c"), {"c": cid}).one())


def refreshed_row(app: Flask, cid: int) -> tuple[Any, ...]:
    """The row after the register recomputes the contact from all its facts."""
    with app.extensions["gatekeeper.db"].session_scope() as session:
        clocks.refresh(session, [cid], app.extensions["gatekeeper.context"].policy)
    return contact_row(app, cid)


def hit(
    cid: int,
    at: datetime,
    *,
    key: str = "f:0",
    method: str = "GET",
    agent: str | None = FIREFOX,
    counts: bool = True,
    kind: str = "click",
) -> SpoolRecord:
    """A spool line as the fast path appends it for a hit at ``at``."""
    sent = int((TODAY - timedelta(hours=1)).timestamp())
    line = click_record(kind, cid, 7, SHOP, sent, method=method, user_agent=agent, at=at, counts=counts)
    return SpoolRecord(key, line)


def handle(app: Flask, *records: SpoolRecord) -> None:
    """Hand a batch to the clicks stream's handler, as ``gatekeeper drain`` does."""
    settings, database = app.extensions["gatekeeper.settings"], app.extensions["gatekeeper.db"]
    spooled.handler(settings, database)(list(records))


def interests(app: Flask, cid: int) -> list[dict[str, Any]]:
    return stored_events(app, cid, "interest")


def card_of(app: Flask, cid: int) -> ContactCard:
    with borrowed(app) as raw:
        card = load_card(raw, cid)
    assert card is not None
    return card


# --- the kept connections ----------------------------------------------------------------


def test_the_unsubscribe_page_reads_nothing_from_the_database(tmp_path: Path) -> None:
    # Served with a database nobody can reach: the page is the token and a template, no more.
    nowhere = create_app(make_settings("postgresql://nobody@127.0.0.1:1/nothing", tmp_path))
    token = links_of(nowhere).unsubscribe(42, 7, "sms")
    res = nowhere.test_client().get(f"/u/{token}", headers={"Accept-Language": "en"})
    assert res.status_code == 200
    html = res.get_data(as_text=True)
    assert "by text message" in html and f'href="/u/{token}/preferences?lang=en"' in html
    nowhere.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)


def test_kept_connections_are_reused_and_leave_no_transaction_open(app: Flask, paul: int) -> None:
    pool = connections(app)
    for _ in range(3):
        with borrowed(app) as raw:
            assert raw.one("SELECT id FROM contacts WHERE id = ?", (paul,)) == (paul,)
    assert len(pool._idle) == 1
    engine = app.extensions["gatekeeper.db"].engine
    with borrowed(app) as raw, engine.connect() as pooled:
        if raw.dialect == "sqlite":
            assert not raw.connection.in_transaction
            # Checkpoints happen after the write lock is released, never inside a commit.
            assert raw.one("PRAGMA wal_autocheckpoint") == (0,)
            for pragma in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout"):
                setting = pooled.exec_driver_sql(f"PRAGMA {pragma}").one()
                assert raw.one(f"PRAGMA {pragma}") == tuple(setting)  # the engine's own
        else:
            assert raw.connection.info.transaction_status == 0  # idle, autocommit
            # Clicks are written by the drainer, a flush per batch: fully durable, as the rest.
            assert raw.one("SHOW synchronous_commit") == ("on",)
            assert pooled.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_a_connection_left_in_a_transaction_is_closed_not_reused(app: Flask, paul: int) -> None:
    pool = connections(app)
    raw = pool.borrow()
    raw.begin()
    pool.give_back(raw)
    assert raw not in pool._idle
    with pytest.raises(Exception):  # noqa: B017 - sqlite3 and psycopg name it differently
        raw.one("SELECT 1")
    with borrowed(app) as fresh:
        assert fresh.one("SELECT 1") == (1,)


def test_disposing_the_engine_closes_the_kept_connections(app: Flask, paul: int) -> None:
    with borrowed(app) as raw:
        raw.one("SELECT 1")
    app.extensions["gatekeeper.db"].engine.dispose()
    assert connections(app)._idle == []
    with pytest.raises(Exception):  # noqa: B017 - closed: each driver has its own error
        raw.one("SELECT 1")


@pytest.mark.parametrize("child_borrows", [False, True], ids=["idle child", "child serving links"])
def test_a_forked_worker_leaves_its_parents_connection_alone_even_at_exit(
    app: Flask, paul: int, child_borrows: bool
) -> None:
    # gunicorn forks workers from a loaded app; a worker exits through sys.exit, which runs the
    # finalizers registered with atexit (weakref.finalize's among them).
    pool = connections(app)
    with borrowed(app) as parents:
        parents.one("SELECT 1")
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        status = 1
        try:
            if child_borrows:
                with borrowed(app) as own:
                    status = 0 if own is not parents and own.one("SELECT 1") == (1,) else 2
            else:
                status = 0
            atexit._run_exitfuncs()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool._idle == [parents]
    assert parents.one("SELECT id FROM contacts WHERE id = ?", (paul,)) == (paul,)


def test_clicks_go_on_after_many_batches_and_checkpoints(
    app: Flask, client: FlaskClient, paul: int, drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spooled, "CHECKPOINT_CLICKS", 2)
    for minute in range(5):
        set_clock(app, TODAY + timedelta(minutes=minute))
        token = signer(app).tracked("click", paul, 7, SHOP, TODAY - timedelta(hours=1))
        assert client.get(f"/c/{token}", headers={"User-Agent": FIREFOX}).status_code == 302
        if minute % 2:
            drain()
    drain()
    assert len(interests(app, paul)) == 5
    assert read_anchor(app, paul) == TODAY + timedelta(minutes=4)
    assert contact_row(app, paul) == refreshed_row(app, paul)
    assert pending(Path(app.extensions["gatekeeper.settings"].spool_dir), "clicks") == 0


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(2100, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 11, 22, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_raw_timestamp_is_the_text_sqlalchemy_stores(moment: datetime) -> None:
    assert Raw(None, "sqlite").ts(moment) == ts_value("sqlite", moment)


# --- the spooled clicks' handler: clocks -----------------------------------------------------


def test_a_click_moves_the_clock_as_the_refresh_would_and_keeps_every_field(app: Flask, paul: int) -> None:
    handle(app, hit(paul, TODAY, agent="Firefox\nX"))
    after = contact_row(app, paul)
    assert refreshed_row(app, paul) == after
    assert card_of(app, paul).stored_columns[2] == "interest.click"
    (event,) = interests(app, paul)
    assert event == {
        "type": "interest",
        "origin": "link",
        "kind": "click",
        "occurred_at": "2026-11-22T10:00:00Z",
        "counts": True,
        "detail": SHOP,
        "campaign_id": 7,
        "method": "GET",
        "user_agent": "Firefox\nX",
        "sent_at": "2026-11-22T09:00:00Z",
    }


def test_a_batch_handed_twice_stores_each_click_once(app: Flask, paul: int) -> None:
    batch = [hit(paul, TODAY, key="f:0"), hit(paul, TODAY + timedelta(seconds=1), key="f:90", method="HEAD")]
    handle(app, *batch)
    first = contact_row(app, paul)
    handle(app, *batch)  # a drainer stopped before saving its progress hands it again
    assert [e["method"] for e in interests(app, paul)] == ["GET", "HEAD"]
    assert contact_row(app, paul) == first == refreshed_row(app, paul)


@pytest.mark.parametrize("together", [False, True], ids=["two batches", "one batch"])
def test_an_older_click_never_moves_a_clock_back(app: Flask, paul: int, together: bool) -> None:
    later, earlier = hit(paul, TODAY + timedelta(minutes=5), key="f:1"), hit(paul, TODAY, key="f:0")
    if together:
        handle(app, later, earlier)
    else:
        handle(app, later)
        handle(app, earlier)
    assert len(interests(app, paul)) == 2
    assert read_anchor(app, paul) == TODAY + timedelta(minutes=5)
    assert refreshed_row(app, paul) == contact_row(app, paul)


def test_hits_that_do_not_count_are_stored_and_leave_the_clock(app: Flask, paul: int) -> None:
    before = contact_row(app, paul)
    handle(app, hit(paul, TODAY, method="HEAD", counts=False), hit(paul, TODAY, agent=None, counts=False))
    assert [e["counts"] for e in interests(app, paul)] == [False, False]
    assert contact_row(app, paul) == before


@pytest.mark.parametrize("column", ["clock_anchor_at", "refused_at"])
def test_a_contact_without_a_usable_stored_clock_is_recomputed(app: Flask, paul: int, column: str) -> None:
    # No stored anchor (never refreshed), or a refused reconsent (its instant is not stored):
    # the click falls back to compute_clock over every fact.
    value = None if column == "clock_anchor_at" else TODAY - timedelta(days=1)
    with app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text(f"UPDATE contacts SET {column} = :v WHERE id = :c"), {"v": value, "c": paul})
    handle(app, hit(paul, TODAY))
    assert read_anchor(app, paul) == TODAY
    assert refreshed_row(app, paul) == contact_row(app, paul)


def add_event(client: FlaskClient, auth: dict[str, str], **event: Any) -> None:
    body = {"events": [{"contact": {"external_id": "crm-42"}, **event}]}
    assert client.post("/api/v1/events", json=body, headers=auth).status_code == 200


def test_a_click_during_a_running_contract_keeps_the_contract_clock(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    add_event(client, auth, type="purchase", occurred_at="2026-11-01", seller="ACME SAS")
    add_event(client, auth, type="contract", kind="subscription", starts_at="2026-01-01")
    handle(app, hit(paul, TODAY))
    assert contact_row(app, paul) == refreshed_row(app, paul)
    assert card_of(app, paul).deadline is None


def test_a_click_is_applied_to_the_contact_row_as_it_is_when_drained(
    app: Flask, client: FlaskClient, auth: dict[str, str], drain: Drain
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth, collected_by="Other Co")
    add_event(client, auth, type="purchase", occurred_at="2026-11-21", seller="ACME SAS")
    token = signer(app).tracked("click", cid, 7, SHOP, TODAY - timedelta(hours=1))
    client.get(f"/c/{token}", headers={"User-Agent": FIREFOX})  # journaled while a prospect
    with app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET collected_by = 'ACME SAS' WHERE id = :c"), {"c": cid})
    refreshed_row(app, cid)  # the register's update: a client since the 21st
    drain()
    assert contact_row(app, cid) == refreshed_row(app, cid)
    clock = card_of(app, cid).stored_clock
    assert clock is not None and (clock.clock, clock.anchor_at) == ("client", TODAY)


def test_a_batch_of_many_contacts_leaves_each_row_as_the_refresh_would(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    set_clock(app, TODAY)
    ids = [
        add_contact(client, auth, external_id=f"crm-{i}", email=f"p{i}@example.fr", phone=None)
        for i in range(4)
    ]
    handle(
        app,
        hit(ids[0], TODAY, key="f:0"),
        hit(ids[1], TODAY, key="f:1", kind="download"),
        hit(ids[1], TODAY + timedelta(minutes=1), key="f:2"),
        hit(ids[2], TODAY, key="f:3", method="HEAD", counts=False),
        hit(ids[0], TODAY - timedelta(minutes=1), key="f:4"),
    )
    assert [len(interests(app, cid)) for cid in ids] == [2, 2, 1, 0]
    for cid in ids:
        assert contact_row(app, cid) == refreshed_row(app, cid)
    assert read_anchor(app, ids[1]) == TODAY + timedelta(minutes=1)


# --- the spooled clicks' handler: what it refuses ------------------------------------------


def test_an_erased_or_unknown_contact_gets_nothing_stored(app: Flask, paul: int) -> None:
    erase(app, paul)
    handle(app, hit(paul, TODAY, key="f:0"), hit(paul + 1000, TODAY, key="f:1"))
    assert interests(app, paul) == [] and interests(app, paul + 1000) == []


MALFORMED = {
    "not json": b"{oops",
    "not an object": b"[1,2]",
    "another version": hit(1, TODAY).data.replace(b'"v":1', b'"v":99'),
    "no contact": hit(1, TODAY).data.replace(b'"c":1,', b""),
    "contact not an integer": hit(1, TODAY).data.replace(b'"c":1', b'"c":"1"'),
    "instant not an integer": hit(1, TODAY).data.replace(b'"t":', b'"t":"x","x":'),
    "another purpose": hit(1, TODAY).data.replace(b'"k":"click"', b'"k":"unsubscribe"'),
    "counts not a boolean": hit(1, TODAY).data.replace(b'"n":true', b'"n":"yes"'),
    "instant out of range": hit(1, TODAY).data.replace(b'"t":', b'"t":9' + b"9" * 20 + b',"x":'),
    "not utf-8": b'{"v":1,"k":"click","ua":"\xff"}',
}


def test_a_malformed_line_is_logged_and_skipped_and_never_blocks_the_stream(
    app: Flask, paul: int, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [SpoolRecord(f"bad:{i}", data) for i, data in enumerate(MALFORMED.values())]
    handle(app, bad[0], hit(paul, TODAY, key="good:0"), *bad[1:])
    assert len(interests(app, paul)) == 1  # the one good line of the batch
    for i in range(len(MALFORMED)):
        assert f"spool record bad:{i} is not a click" in caplog.text


LINES = {
    "a download, no send time": ("download", "spring-26", None, "A\nB" + "x" * 400, False),
    "a click, quotes and accents": ("click", 7, 1795338000, 'Mo"zi\\lla/é\u2028', True),
    "no campaign, no user agent": ("click", None, 0, None, False),
}


@pytest.mark.parametrize("case", list(LINES))
def test_a_spooled_line_holds_the_hit_and_never_a_newline(case: str) -> None:
    kind, campaign, sent, agent, counts = LINES[case]
    url = 'https://shop.example/été?q="x"&r=1'
    at = TODAY + timedelta(microseconds=123457)
    line = click_record(kind, 5, campaign, url, sent, method="get", user_agent=agent, at=at, counts=counts)
    assert b"\n" not in line
    click = parse_click(line)
    assert (click.purpose, click.contact_id, click.campaign_id, click.url) == (kind, 5, campaign, url)
    assert (click.sent_at, click.method, click.at, click.counts) == (sent, "GET", at, counts)
    assert click.user_agent == (None if agent is None else agent[:USER_AGENT_MAX])


def read_anchor(app: Flask, cid: int) -> Any:
    card = card_of(app, cid)
    clock = card.stored_clock
    assert clock is not None
    return clock.anchor_at


# --- the pre-rendered page ----------------------------------------------------------------


def test_a_skeleton_escapes_every_value_it_is_filled_with() -> None:
    marker = "\ue000"
    page = Skeleton(f"<p>{marker}address{marker}</p><a href='{marker}link{marker}'>", ("link", "address"))
    filled = page.fill_bytes(("/p/a'b", "<b>x&y</b>"))
    assert filled == b"<p>&lt;b&gt;x&amp;y&lt;/b&gt;</p><a href='/p/a&#39;b'>"


def test_a_head_on_the_unsubscribe_page_has_its_headers_and_no_body(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    path = f"/u/{signer(app).unsubscribe(paul)}"
    get, head = client.get(path), client.head(path)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["Content-Security-Policy"] == get.headers["Content-Security-Policy"]


def test_the_kept_connection_sees_what_other_connections_commit(app: Flask, paul: int) -> None:
    # Autocommit: no read leaves a snapshot (SQLite) or a transaction (PostgreSQL) behind.
    with borrowed(app) as raw:
        raw.one("SELECT 1 FROM contacts")
    with app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET first_name = 'Pierre' WHERE id = :c"), {"c": paul})
    with borrowed(app) as raw:
        assert raw.one("SELECT first_name FROM contacts WHERE id = ?", (paul,)) == ("Pierre",)


def test_a_user_agents_remembered_answer_still_depends_on_the_time_since_the_send_and_the_method(
    app: Flask, client: FlaskClient, paul: int, drain: Drain
) -> None:
    # The fast path remembers interest_counts per user agent: the grace period and the method
    # must still decide each hit.
    hits = [
        ("GET", FIREFOX, timedelta(hours=1)),
        ("GET", FIREFOX, timedelta(seconds=3)),  # within the grace period after the send
        ("HEAD", FIREFOX, timedelta(hours=1)),
        ("GET", "Mozilla/5.0 (compatible; Mimecast URL protect)", timedelta(hours=1)),
        ("GET", FIREFOX, timedelta(hours=2)),
    ]
    for minute, (method, agent, since) in enumerate(hits):
        set_clock(app, TODAY + timedelta(minutes=minute))
        token = signer(app).tracked("click", paul, 7, SHOP, TODAY + timedelta(minutes=minute) - since)
        assert client.open(f"/c/{token}", method=method, headers={"User-Agent": agent}).status_code == 302
    drain()
    assert [e["counts"] for e in interests(app, paul)] == [True, False, False, False, True]
