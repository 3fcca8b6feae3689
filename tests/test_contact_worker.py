"""The second process of large contacts imports: what it sends and how the parent reads it."""

from __future__ import annotations

import fcntl
import io
import pickle
import signal
import subprocess
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.config import load_settings
from gatekeeper.csvio import detect_format
from gatekeeper.errors import ValidationError
from gatekeeper.register import contact_import, contact_worker
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
    sent: list[bytes] = []  # pickled at once, as the pipe does
    contact_worker.read_file(
        str(path),
        detect_format(path),
        ctx.policy,
        ctx.region,
        ctx.hasher,
        lambda m: sent.append(pickle.dumps(m)),
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
    assert len(sent[0][3]) == 1  # the facts first numbered in the batch come with it
    problems, facts = sent[1][1], sent[1][2]
    assert problems.total == 1 and problems.items[0]["row"] == 2 and len(facts) == 1


def test_each_batch_brings_the_facts_first_numbered_in_it(ctx: RegisterContext, tmp_path: Path) -> None:
    from gatekeeper.register.contact_plan import BATCH

    path = tmp_path / "c.csv"
    days = {2: 2, BATCH + 2: 3}  # a new collection day in each of the two batches
    lines = (f"u{n}@example.fr,2025-01-{days.get(n, 1):02d}\n" for n in range(2 * BATCH))
    path.write_text("email,collected_at\n" + "".join(lines))
    sent = messages_for(ctx, path)
    numbered = [m[3] for m in sent if m[0] == "rows"]
    assert [len(n) for n in numbered] == [2, 1, 0]  # the last message: the empty batch at the end
    result = (Problems(), FactTable(ctx.policy))
    batches = list(contact_worker._receive(stream(*sent), result, lambda _n: None, BATCH))
    # Numbered in the parent as the batches arrive, with the child's numbers.
    fact_ids = [r[-2] for batch in batches for r in batch]  # (row, email, fact, email hash)
    assert (fact_ids[2], fact_ids[BATCH + 2], set(fact_ids)) == (1, 2, {0, 1, 2})
    assert result[1].order == [*numbered[0], *numbered[1]]


def test_the_child_adds_the_keyed_hash_of_each_coordinate(ctx: RegisterContext, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,phone,collected_at\nA@Example.fr,,2025-01-01\n,06 12 34 56 78,2025-01-01\n")
    sent = messages_for(ctx, path)
    # The hasher crossed a pickle, as it crosses the pipe: the same key, the same hashes.
    hasher = pickle.loads(pickle.dumps(ctx.hasher))  # noqa: S301 - pickled just above
    assert [r[-2:] for r in sent[0][1]] == [
        (ctx.hasher.coordinate("email", "a@example.fr"), ""),
        ("", hasher.coordinate("phone", "+33612345678")),
    ]
    assert hasher.coordinate("email", "x@y.fr") == ctx.hasher.coordinate("email", "x@y.fr")


def test_the_parent_merges_what_the_child_found(ctx: RegisterContext, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,collected_at\n" + "".join(f"u{n}@example.fr,2025-01-01\n" for n in range(12)))
    result = (Problems(), FactTable(ctx.policy))
    ticks: list[int] = []
    batches = list(contact_worker._receive(stream(*messages_for(ctx, path)), result, ticks.append, 5))
    assert [r[0] for batch in batches for r in batch] == list(range(1, 13))
    assert ticks == [5, 10] and not result[0] and len(result[1].ids) == 1


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        pytest.param([("rows", [], 0, [])], contact_worker.ReaderError, id="child ended early"),
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


def test_a_child_killed_in_the_middle_of_a_message_fails_the_import(ctx: RegisterContext) -> None:
    whole = pickle.dumps(("rows", [(1, "a@example.fr")] * 100, 100, []))
    result = (Problems(), FactTable(ctx.policy))
    with pytest.raises(contact_worker.ReaderError):
        list(contact_worker._receive(io.BytesIO(whole[: len(whole) // 2]), result, lambda _n: None, 5))


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The reading processes started during the test, to check none outlives its import."""
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(contact_worker.subprocess, "Popen", recording)
    return started


def many_contacts(tmp_path: Path) -> Path:
    """Enough rows that the child blocks on a full pipe if nobody reads."""
    path = tmp_path / "many.csv"
    path.write_text("email,collected_at\n" + "".join(f"u{n}@example.fr,2025-01-01\n" for n in range(30_000)))
    return path


def many_contacts_read_by_a_child(ctx: RegisterContext, tmp_path: Path) -> Generator[Any, None, None]:
    path = many_contacts(tmp_path)
    result = (Problems(), FactTable(ctx.policy))
    fmt = detect_format(path)
    return contact_worker.staged_by_child(path, fmt, ctx, result, print, 10**9)


def test_a_parent_that_stops_reading_leaves_no_process_behind(
    ctx: RegisterContext, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    rows = many_contacts_read_by_a_child(ctx, tmp_path)
    assert next(rows)[0][0] == 1
    rows.close()
    assert children[0].returncode is not None  # reaped: neither running nor a zombie
    # It ended on its own once its pipe was closed, not killed after the parent's 10 s wait.
    assert children[0].returncode != -signal.SIGKILL


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are a Linux feature")
def test_the_child_can_write_several_batches_ahead_of_the_parent(
    ctx: RegisterContext, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    rows = many_contacts_read_by_a_child(ctx, tmp_path)
    first = next(rows)
    assert children[0].stdout is not None
    size = fcntl.fcntl(children[0].stdout.fileno(), fcntl.F_GETPIPE_SZ)
    rows.close()
    assert size == contact_worker.PIPE_BYTES > 4 * len(pickle.dumps(("rows", first, len(first))))


def test_an_import_that_fails_while_staging_stops_its_reading_process(
    app: Any, tmp_path: Path, children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault at the database edge: the first row staged, then the connection fails.
    def failing_load(_session: Any, name: str, _columns: Any, rows: Any) -> int:
        if name != contact_import.STAGE:
            raise AssertionError(name)
        next(iter(rows))
        raise ConnectionError("the database went away")

    monkeypatch.setattr(contact_import, "PARALLEL_FROM_BYTES", 0)
    monkeypatch.setattr(contact_import, "load_rows", failing_load)
    path = many_contacts(tmp_path)
    database, ctx = app.extensions["gatekeeper.db"], app.extensions["gatekeeper.context"]
    # pytest.raises keeps the traceback, and with it every frame of the failed import, alive.
    with pytest.raises(ConnectionError) as caught, database.session_scope() as session:
        contact_import.import_contacts(session, path, ctx, lambda _n: None, lambda _p: None)
    assert caught.value.args == ("the database went away",)
    assert len(children) == 1 and children[0].returncode is not None
