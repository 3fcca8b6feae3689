"""The provider events' work that may follow their storage by a moment (migration 0006).

Theory of operation
-------------------
A webhook request stores its raw events, and the suppressions and objections they carry, in
its transaction before the 2xx (``delivery_apply``). Two things need not be there and cost
most of a SQLite commit, because SQLite's write-ahead log writes whole pages and each of them
dirties a random page per contact: the index of the events by contact, and the register facts of
clicks with their journal entries and clock moves. The request appends them instead
to ``webhook_pending``, in the same transaction: one row naming the range of event ids it
stored, and one per click with the fact it makes (``effect``), at the table's right edge.

``gatekeeper drain`` applies the queue each pass, thousands of rows per transaction
(``webhook_spooled.settle_queue``, ``delivery_apply.apply_queued``): the contacts into
``webhook_event_contacts`` sorted, so each index page is written once per pass rather than once
per request; the facts through the same inserts, journal entries and clock moves a request
would have made. It is idempotent, like the rest of the drainer: a link or a fact stored twice
is skipped by its key, a clock only moves forward, and the rows applied are deleted by id in the
same transaction. A fact waiting for a contact who
was anonymised meanwhile is dropped. Until applied, a click's clock has not moved yet: a
decision made in that second errs on the safe side (an older deadline), and the retention
tasks apply the queue first (``settle_queue``).

Readers by contact look in the index and in the queue (``EVENTS_OF_CONTACT``): the queue stays
small while the drainer runs, and its rows are found without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gatekeeper.sqlbulk import json_value
from gatekeeper.timeparse import isoformat

if TYPE_CHECKING:
    # Types only: the readers by contact (evidence, rights, purge) import this module, and
    # must not pull in the webhook adapters with the delivery plan.
    from gatekeeper.register.delivery_plan import Consequence
    from gatekeeper.register.rawsql import Sql

# The ids of a contact's provider events (bound parameter ``:contact``), wherever they are: the
# queue holds few ranges while the drainer runs, each read on the events' primary key.
EVENTS_OF_CONTACT = (
    "SELECT event_id FROM webhook_event_contacts WHERE contact_id = :contact"
    " UNION SELECT e.id FROM webhook_pending p JOIN webhook_events e"
    " ON e.id BETWEEN p.event_id AND p.last_event_id WHERE e.contact_id = :contact"
)
# The same for a set of contacts given as a subquery (``{contacts}``).
EVENTS_OF_CONTACTS = (
    "SELECT event_id FROM webhook_event_contacts WHERE contact_id IN ({contacts})"
    " UNION SELECT e.id FROM webhook_pending p JOIN webhook_events e"
    " ON e.id BETWEEN p.event_id AND p.last_event_id WHERE e.contact_id IN ({contacts})"
)
_QUEUE = "INSERT INTO webhook_pending (event_id, last_event_id, contact_id, effect) VALUES (?, ?, ?, ?)"
# Sorted, so each page of the index is written once however many events land on it.
INDEX_RANGE = (
    "INSERT INTO webhook_event_contacts (contact_id, event_id)"
    " SELECT contact_id, id FROM webhook_events WHERE id BETWEEN ? AND ? AND contact_id IS NOT NULL"
    " ORDER BY contact_id, id ON CONFLICT (contact_id, event_id) DO NOTHING"
)
TAKE = "SELECT id, event_id, last_event_id, contact_id, effect FROM webhook_pending ORDER BY id LIMIT ?"


# --- the request's side: in its transaction -------------------------------------------------


def queue_range(sql: Sql, first: int, last: int) -> None:
    """Queue the events with ids from ``first`` to ``last`` for the index by contact: the ids
    this transaction stored (on PostgreSQL the range may hold another's too: indexing an event
    twice changes nothing)."""
    sql.run(_QUEUE, (first, last, None, None))


def deferrable(c: Consequence) -> bool:
    """A consequence that may wait for the drainer: a register fact without legal urgency (a
    click). Suppressions and objections are in force before the 2xx."""
    return c.fact is not None and not c.suppressions and not c.objection


def queue_facts(sql: Sql, later: Sequence[tuple[int, Consequence]]) -> None:
    """Queue the facts of ``(raw event id, consequence)`` pairs (``deferrable``)."""
    sql.many(_QUEUE, [(event_id, event_id, c.fact.contact_id, _effect(c)) for event_id, c in later if c.fact])


def merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or adjacent id ranges merged, in order: one statement each."""
    found: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if found and first <= found[-1][1] + 1:
            found[-1] = (found[-1][0], max(found[-1][1], last))
        else:
            found.append((first, last))
    return found


def _effect(c: Consequence) -> str | None:
    fact = c.fact
    if fact is None:
        return None
    return json_value(
        {
            "type": fact.type,
            "at": isoformat(fact.at),
            "data": fact.data,
            "key": fact.key,
            "origin": fact.origin,
            "counts": c.interest_at is not None,
        }
    )
