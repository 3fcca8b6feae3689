"""A large contacts file is read and validated in a second process, so the importing process
only stages rows: on two cores, parsing the next rows overlaps with storing the last ones.

The child (``python -m gatekeeper.register.contact_worker``) runs the same ``staged_batches``
as the single-process path and writes pickled messages to its stdout: batches of staging tuples,
each with the facts first numbered in it (so a parent inserting into the register while it
reads knows every row's facts), then the problems it found and all the facts it numbered. The
child adds the keyed hashes too (the parent hands it the hasher through the stdin pipe, never
argv or the environment): the parent stores, and at a million rows the hashes were 2.8 s of
its work while the child waited on it. A plain
subprocess rather than ``multiprocessing``: nothing of the caller's ``__main__`` is
re-imported, and a threaded parent (web worker, job runner) is never forked.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from gatekeeper.csvio import CsvFormat, read_rows
from gatekeeper.domain.policy import Policy
from gatekeeper.errors import GatekeeperError, ValidationError
from gatekeeper.register.contact_facts import Facts, FactTable
from gatekeeper.register.contact_plan import Batch, ContactPlan, hashed, staged_batches
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.schema import Problems
from gatekeeper.security import KeyedHasher

# 1 MiB, the default /proc/sys/fs/pipe-max-size: about three batches of pickled rows.
PIPE_BYTES = 1 << 20
Send = Callable[[tuple[Any, ...]], None]
Progress = Callable[[int], None]


class ReaderError(RuntimeError):
    """The reading process failed for a reason that is not the file's fault."""


def staged_by_child(
    path: Path,
    fmt: CsvFormat,
    ctx: RegisterContext,
    result: tuple[Problems, FactTable],
    progress: Progress,
    progress_every: int,
) -> Generator[Batch, None, None]:
    """The batches of staging tuples of ``path`` as read by a child process; on exhaustion
    ``result`` holds the child's problems and numbered facts."""
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None  # PIPE was asked for both
    _widen(child.stdout)
    try:
        with child.stdin:
            pickle.dump((str(path), fmt, ctx.policy, ctx.region, ctx.hasher), child.stdin)
        yield from _receive(child.stdout, result, progress, progress_every)
    finally:
        child.stdout.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the parent stopped early (an error while storing)
            child.kill()
            child.wait()


def _widen(pipe: IO[bytes]) -> None:
    """Lets the child run a few batches ahead: through the default 64 KiB pipe it waited for
    the parent to read each batch (a few hundred KiB), so the two processes took turns
    instead of working at the same time."""
    if (size := getattr(fcntl, "F_SETPIPE_SZ", None)) is None:
        return  # not Linux: the default pipe
    # Above /proc/sys/fs/pipe-max-size for this user: keep the default.
    with suppress(OSError):
        fcntl.fcntl(pipe.fileno(), size, PIPE_BYTES)


def report(reported: int, read: int, every: int, progress: Progress) -> int:
    """Reports every multiple of ``every`` up to ``read`` rows past ``reported``; returns the last."""
    while reported + every <= read:
        reported += every
        progress(reported)
    return reported


def _receive(
    stream: IO[bytes],
    result: tuple[Problems, FactTable],
    progress: Progress,
    every: int,
) -> Iterator[Batch]:
    reported = 0
    while True:
        try:
            kind, *payload = pickle.load(stream)  # noqa: S301 - written by our own child
        except (EOFError, pickle.UnpicklingError):  # a child killed mid-message: truncated
            raise ReaderError("the import's reading process ended without a result") from None
        if kind == "rows":
            rows, read, numbered = payload
            for facts in numbered:  # in id order: the parent's table numbers them alike
                result[1].id_of(facts)
            yield rows
            reported = report(reported, read, every, progress)
        elif kind == "end":
            _merge(result, *payload)
            return
        elif kind == "invalid":
            raise ValidationError(*payload)
        else:
            raise ReaderError(payload[0])


def _merge(result: tuple[Problems, FactTable], problems: Problems, facts: dict[Facts, int]) -> None:
    ours, table = result
    ours.items[:], ours.total = problems.items, problems.total
    for found in facts:  # a dict in id order; the batches already brought all of them
        table.id_of(found)


def read_file(
    path: str, fmt: CsvFormat, policy: Policy, region: str, hasher: KeyedHasher, send: Send
) -> None:
    """The child's work: every message is (kind, *payload)."""
    try:
        header, rows = read_rows(Path(path), fmt)
        plan = ContactPlan(header, FactTable(policy), region)
        problems = Problems()
        sent = 0
        for read, batch in staged_batches(plan, header, rows, problems):
            numbered = plan.facts.order[sent:]
            sent += len(numbered)
            send(("rows", hashed(batch, plan, hasher), read, numbered))
        send(("end", problems, plan.facts.ids))
    except GatekeeperError as exc:
        send(("invalid", exc.message, exc.details))
    except Exception as exc:  # reported to the parent, which raises it
        send(("crash", f"{type(exc).__name__}: {exc}"))


def main() -> None:
    path, fmt, policy, region, hasher = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our parent
    out = sys.stdout.buffer

    def send(message: tuple[Any, ...]) -> None:
        pickle.dump(message, out, pickle.HIGHEST_PROTOCOL)

    try:
        read_file(path, fmt, policy, region, hasher, send)
        out.flush()
    except BrokenPipeError:
        # The parent stopped reading (it failed while storing rows): nobody is left to tell.
        os._exit(1)


if __name__ == "__main__":
    main()
