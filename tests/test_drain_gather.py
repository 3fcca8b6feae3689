"""How long ``gatekeeper drain`` gathers work between passes (``cli._gather``): a full interval
while work keeps arriving, a poll once it stopped, the whole interval when nothing waits.

The spool and the database are real; only the clock and the stop event's waiting are doubles,
so each poll is counted instead of slept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from gatekeeper import cli
from gatekeeper.models import WebhookEvent, WebhookPending, utcnow
from gatekeeper.spool import Spool

INTERVAL = 1.0


class Polls:
    """A stop event that never fires: each wait advances the fake clock by its timeout and
    runs ``on_wait`` (a provider still posting, or not)."""

    def __init__(self, on_wait: object = None) -> None:
        self.now = 1_000.0
        self.waits = 0
        self.on_wait = on_wait

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        self.now += timeout
        if callable(self.on_wait):
            self.on_wait()
        return False

    def is_set(self) -> bool:
        return False


def gather(app: Flask, polls: Polls) -> float:
    """Seconds (fake) that ``_gather`` waited."""
    began = polls.now
    settings, database = app.extensions["gatekeeper.settings"], app.extensions["gatekeeper.db"]
    cli._gather(settings, database, polls, INTERVAL, polls.clock)  # type: ignore[arg-type]
    return polls.now - began


def journal(app: Flask) -> None:
    Spool(Path(app.extensions["gatekeeper.settings"].spool_dir), "webhooks").append(b'{"v":1}')


def queue(app: Flask) -> None:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        event = WebhookEvent(
            provider="sendgrid", dedupe_key=f"sendgrid:q{utcnow().timestamp()}", kind="click",
            provider_event="click", occurred_at=utcnow(), raw={},
        )  # fmt: skip
        session.add(event)
        session.flush()
        session.add(WebhookPending(event_id=event.id, last_event_id=event.id))


def test_with_nothing_waiting_the_drainer_sleeps_the_whole_interval(app: Flask) -> None:
    polls = Polls()
    assert gather(app, polls) == pytest.approx(INTERVAL)
    assert polls.waits == round(INTERVAL / cli.QUIET_POLL_SECONDS)


@pytest.mark.parametrize("arrive", [journal, queue], ids=["spool", "queue"])
def test_once_work_stops_arriving_the_next_pass_starts_after_one_poll(
    app: Flask, arrive: object
) -> None:
    assert callable(arrive)
    arrive(app)
    polls = Polls()
    assert gather(app, polls) == pytest.approx(cli.QUIET_POLL_SECONDS)
    assert polls.waits == 1


@pytest.mark.parametrize("arrive", [journal, queue], ids=["spool", "queue"])
def test_while_work_keeps_arriving_the_drainer_gathers_a_full_interval(
    app: Flask, arrive: object
) -> None:
    assert callable(arrive)
    arrive(app)
    polls = Polls(on_wait=lambda: arrive(app))
    assert gather(app, polls) == pytest.approx(INTERVAL)
    assert polls.waits == round(INTERVAL / cli.QUIET_POLL_SECONDS)
