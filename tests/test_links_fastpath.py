"""The fast path's own machinery, on SQLite and PostgreSQL: its kept connections, and a click's
compare-and-set clock update, which must leave the contact row exactly as ``clocks.refresh``
would in every case (fresh card, stale card, refused reconsent, no stored clock, old click)."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_links_helpers import FIREFOX, TODAY, add_contact, set_clock, signer

from gatekeeper.links import fastpath
from gatekeeper.links.clicks import plan_interest, store_at_once, store_interest
from gatekeeper.links.connection import LinkConnections
from gatekeeper.links.records import ContactCard, Raw, load_card
from gatekeeper.links.service import Skeleton
from gatekeeper.links.tokens import LinkClaims
from gatekeeper.register import clocks

SHOP = "https://shop.example/offre?id=42"


@pytest.fixture
def paul(app: Flask, client: FlaskClient, auth: dict[str, str]) -> int:
    set_clock(app, TODAY)
    return add_contact(client, auth)


def connections(app: Flask) -> LinkConnections:
    layer: Any = app.wsgi_app
    while not isinstance(layer, fastpath.FastLinks):
        layer = layer.app
    return layer.connections


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


def claims_for(cid: int, *, sent_hours_ago: int = 1) -> LinkClaims:
    sent = int((TODAY - timedelta(hours=sent_hours_ago)).timestamp())
    return LinkClaims("click", cid, 7, sent, sent_at=sent, url=SHOP)


def store_click(app: Flask, card: ContactCard, cid: int, at_offset: timedelta = timedelta(0)) -> None:
    """A click planned from ``card`` (maybe stale) and stored in one transaction."""
    policy = app.extensions["gatekeeper.context"].policy
    with borrowed(app) as raw:
        interest = plan_interest(
            raw, policy, card, claims_for(cid), method="GET", user_agent=FIREFOX, now=TODAY + at_offset
        )
        raw.begin()
        store_interest(raw, policy, interest)
        raw.commit()


def card_of(app: Flask, cid: int) -> ContactCard:
    with borrowed(app) as raw:
        card = load_card(raw, cid)
    assert card is not None
    return card


# --- the kept connections ----------------------------------------------------------------


def test_the_fast_path_keeps_one_connection_and_leaves_no_transaction_open(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    for _ in range(3):
        assert client.get(f"/u/{signer(app).unsubscribe(paul)}").status_code == 200
    pool = connections(app)
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
            assert raw.one("SHOW synchronous_commit") == ("off",)  # as SQLite's NORMAL
            # ... on the click connections alone: every other write stays fully durable.
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


def test_clicks_go_on_after_many_writes_and_checkpoints(
    app: Flask, client: FlaskClient, paul: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatekeeper.links import connection

    monkeypatch.setattr(connection, "CHECKPOINT_EVERY", 2)
    for minute in range(5):
        set_clock(app, TODAY + timedelta(minutes=minute))
        token = signer(app).tracked("click", paul, 7, SHOP, TODAY - timedelta(hours=1))
        assert client.get(f"/c/{token}", headers={"User-Agent": FIREFOX}).status_code == 302
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM events WHERE type = 'interest'")).scalar_one()
    assert n == 5
    assert contact_row(app, paul) == refreshed_row(app, paul)


# --- the click's clock update --------------------------------------------------------------


def test_a_click_on_a_fresh_card_moves_the_clock_as_the_refresh_would(app: Flask, paul: int) -> None:
    store_click(app, card_of(app, paul), paul)
    after = contact_row(app, paul)
    assert refreshed_row(app, paul) == after
    assert card_of(app, paul).stored_columns[2] == "interest.click"


def test_a_click_planned_on_a_stale_card_recomputes_from_all_the_facts(app: Flask, paul: int) -> None:
    stale = card_of(app, paul)
    store_click(app, card_of(app, paul), paul, timedelta(minutes=5))  # the other worker's click
    store_click(app, stale, paul)  # older than the row now says: compare-and-set must fail
    after = contact_row(app, paul)
    assert refreshed_row(app, paul) == after
    assert read_anchor(app, paul) == TODAY + timedelta(minutes=5)


def test_an_older_click_writes_no_clock_and_leaves_the_row_as_the_refresh_would(
    app: Flask, paul: int
) -> None:
    store_click(app, card_of(app, paul), paul, timedelta(minutes=5))
    store_click(app, card_of(app, paul), paul)  # earlier than the anchor: a max, nothing moves
    assert read_anchor(app, paul) == TODAY + timedelta(minutes=5)
    assert refreshed_row(app, paul) == contact_row(app, paul)


@pytest.mark.parametrize("column", ["clock_anchor_at", "refused_at"])
def test_a_contact_without_a_usable_stored_clock_is_recomputed(app: Flask, paul: int, column: str) -> None:
    # No stored anchor (never refreshed), or a refused reconsent (its instant is not stored):
    # the click falls back to compute_clock over every fact.
    value = None if column == "clock_anchor_at" else TODAY - timedelta(days=1)
    with app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text(f"UPDATE contacts SET {column} = :v WHERE id = :c"), {"v": value, "c": paul})
    store_click(app, card_of(app, paul), paul)
    assert read_anchor(app, paul) == TODAY
    assert refreshed_row(app, paul) == contact_row(app, paul)


def add_event(client: FlaskClient, auth: dict[str, str], **event: Any) -> None:
    body = {"events": [{"contact": {"external_id": "crm-42"}, **event}]}
    assert client.post("/api/v1/events", json=body, headers=auth).status_code == 200


def test_a_click_planned_before_a_contract_started_recomputes_though_the_anchor_is_unchanged(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    # A running contract that started before the last purchase keeps the clock, its anchor and
    # kind, but removes the deadline: the compare-and-set must see that the row moved.
    add_event(client, auth, type="purchase", occurred_at="2026-11-01", seller="ACME SAS")
    stale = card_of(app, paul)
    add_event(client, auth, type="contract", kind="subscription", starts_at="2026-01-01")
    assert card_of(app, paul).stored_columns[:3] == stale.stored_columns[:3]
    store_click(app, stale, paul)
    assert contact_row(app, paul) == refreshed_row(app, paul)
    assert card_of(app, paul).deadline is None


def test_a_click_recomputes_from_the_contact_row_as_it_is_now_not_as_it_was_read(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth, collected_by="Other Co")
    add_event(client, auth, type="purchase", occurred_at="2026-11-21", seller="ACME SAS")
    stale = card_of(app, cid)  # a prospect: that purchase was another entity's
    with app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET collected_by = 'ACME SAS' WHERE id = :c"), {"c": cid})
    refreshed_row(app, cid)  # the register's update: a client since the 21st
    store_click(app, stale, cid)  # the compare-and-set misses: recomputed from all the facts
    assert contact_row(app, cid) == refreshed_row(app, cid)
    clock = card_of(app, cid).stored_clock
    assert clock is not None and (clock.clock, clock.anchor_at) == ("client", TODAY)


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


def test_on_postgresql_a_click_is_one_statement_and_a_missed_compare_and_set_is_completed(
    app: Flask, paul: int
) -> None:
    policy = app.extensions["gatekeeper.context"].policy
    stale = card_of(app, paul)
    with borrowed(app) as raw:
        fresh = plan_interest(
            raw, policy, card_of(app, paul), claims_for(paul), method="GET", user_agent=FIREFOX, now=TODAY
        )
        late = plan_interest(
            raw,
            policy,
            stale,
            claims_for(paul),
            method="GET",
            user_agent=FIREFOX,
            now=TODAY - timedelta(minutes=1),
        )
        at_once = store_at_once(raw, fresh)
        assert at_once is (raw.dialect == "postgresql")  # SQLite has no INSERT inside WITH
        if not at_once:
            raw.begin()
            store_interest(raw, policy, fresh)
            raw.commit()
        assert not store_at_once(raw, late)  # the row moved since ``stale`` was read
        raw.begin()
        store_interest(raw, policy, late)  # completes it: the same event is not stored twice
        raw.commit()
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM events WHERE type = 'interest'")).scalar_one()
    assert n == 2
    assert read_anchor(app, paul) == TODAY
    assert refreshed_row(app, paul) == contact_row(app, paul)
