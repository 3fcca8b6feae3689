"""The second process of large contacts imports: what it sends and how the parent reads it."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import load_settings
from gatekeeper.csvio import detect_format
from gatekeeper.errors import ValidationError
from gatekeeper.register import contact_worker
from gatekeeper.register.contact_facts import FactTable
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.register.schema import Problems


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> RegisterContext:
    db = tmp_path_factory.mktemp("worker") / "unused.db"
    settings = load_settings(
        environ={}, overrides={"env": "test", "secret_key": "k", "database_url": f"sqlite:///{db}"}
    )
    return context_from(settings)


def messages_for(ctx: RegisterContext, path: Path) -> list[tuple[Any, ...]]:
    sent: list[bytes] = []  # pickled at once, as the pipe does (the child reuses its batch list)
    contact_worker.read_file(
        str(path), detect_format(path), ctx.policy, ctx.region, lambda m: sent.append(pickle.dumps(m))
    )
    return [pickle.loads(m) for m in sent]  # noqa: S301 - pickled just above


def stream(*messages: tuple[Any, ...]) -> io.BytesIO:
    buffer = io.BytesIO()
    for m in messages:
        pickle.dump(m, buffer)
    buffer.seek(0)
    return buffer


def test_the_child_sends_rows_then_problems_and_facts(ctx: RegisterContext, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,collected_at\na@example.fr,2025-01-01\nbad@,2025-01-01\nc@example.fr,2025-01-01\n")
    sent = messages_for(ctx, path)
    assert [m[0] for m in sent] == ["rows", "end"]
    assert [r[0] for r in sent[0][1]] == [1]  # rows after the first problem are not staged
    problems, facts = sent[1][1], sent[1][2]
    assert problems.total == 1 and problems.items[0]["row"] == 2 and len(facts) == 1


def test_the_parent_merges_what_the_child_found(ctx: RegisterContext, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,collected_at\n" + "".join(f"u{n}@example.fr,2025-01-01\n" for n in range(12)))
    result = (Problems(), FactTable(ctx.policy))
    ticks: list[int] = []
    rows = list(contact_worker._receive(stream(*messages_for(ctx, path)), result, ticks.append, 5))
    assert [r[0] for r in rows] == list(range(1, 13))
    assert ticks == [5, 10] and not result[0] and len(result[1].ids) == 1


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        pytest.param([("rows", [], 0)], contact_worker.ReaderError, id="child ended early"),
        pytest.param([("crash", "MemoryError: ")], contact_worker.ReaderError, id="child crashed"),
        pytest.param([("invalid", "unreadable CSV", [{"row": 3}])], ValidationError, id="bad file"),
    ],
)
def test_a_child_that_fails_fails_the_import(
    ctx: RegisterContext, messages: list[tuple[Any, ...]], error: type[Exception]
) -> None:
    result = (Problems(), FactTable(ctx.policy))
    with pytest.raises(error):
        list(contact_worker._receive(stream(*messages), result, lambda _n: None, 5))
