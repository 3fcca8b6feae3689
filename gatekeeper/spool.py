"""An append-only local journal between a request that only has to *record* something and the
database that applies it in batches.

Theory of operation
-------------------
A tracked click or a "delivered"/"opened" webhook has no legal urgency, yet storing it in its
own transaction costs several times the request around it (a commit, a writer lock shared by
the web workers, the WAL pages of every index touched). So the request appends one line to a
file of its own process and answers; a single drainer (``gatekeeper drain``) hands the lines
to the stream's handler in batches of thousands, one transaction each, set-based. (The
``unsubscribes`` stream is the exception: it only holds what a busy database could not take
at once, see ``gatekeeper.links.unsubscribes``.)

- Files: ``<root>/<stream>/<host>-<pid>-<seq>.log``, one writer each, so lines never
  interleave. ``append`` is one ``os.write`` on an ``O_APPEND`` descriptor: once it returns,
  the line is in the kernel's page cache and survives a crash of the process (the durability
  of SQLite's WAL with ``synchronous=NORMAL``); ``fsync=True`` adds an ``fdatasync`` for
  power-loss durability. A writer moves to a new file past ``ROTATE_BYTES``.
- Progress: ``.offsets`` (JSON, replaced atomically) holds how far each file was handled. It is
  written *after* the handler returned, so a crash between the two hands a batch again: the
  handlers are idempotent (unique keys, clocks that never move back). Each record's key,
  ``<file>:<offset>``, is stable across such replays.
- Cleanup: a file fully handled is deleted once its writer is done with it (a newer file of the
  same process exists, or the process is gone). A line cut short by a dead writer (a full disk)
  is logged and skipped.
- One drainer per stream at a time, by ``flock`` on ``.drain.lock``; a concurrent call returns
  0 at once. The journal is local to the machine: run the drainer where the web workers run.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.db import Database

logger = logging.getLogger(__name__)

ROTATE_BYTES = 64 * 1024 * 1024  # a drained file can be deleted: keep each one bounded
READ_BYTES = 4 * 1024 * 1024
BATCH = 2000  # records per transaction of a handler  # read per step: the drainer's memory stays small
OFFSETS = ".offsets"
LOCK = ".drain.lock"
# Touched after every drain pass that ended well (created by the first writer, so the time a
# stream has waited for its first drain counts too): what /healthz reads to tell a stalled or
# missing drainer from a busy one.
HEARTBEAT = ".drained"
STALLED_AFTER = 60.0  # seconds with records waiting and no pass: the drainer is not running
HOST = socket.gethostname().replace("-", "_")

# Stream name -> "module:function"; function(settings, database) builds the batch handler.
STREAMS: dict[str, str] = {
    # First in each pass: an objection the person was already told is recorded.
    "unsubscribes": "gatekeeper.links.unsubscribes:handler",
    "clicks": "gatekeeper.links.spooled:handler",
    "webhooks": "gatekeeper.webhook_spooled:handler",
}
# What the web workers left for the drainer in the database itself: function(settings, database)
# applies it and returns how many rows (after the streams, whose records may add to it).
QUEUE = "gatekeeper.webhook_spooled:settle_queue"
# function(settings, database) -> a number that grows whenever the requests queue more.
QUEUE_MARK = "gatekeeper.webhook_spooled:queue_mark"


class SpoolRecord(NamedTuple):
    key: str  # "<file>:<offset>": unique, and the same each time the record is handed
    data: bytes  # the line as appended, without its newline


Handler = Callable[[list[SpoolRecord]], None]
T = TypeVar("T")


class KeyedLine(Protocol):
    """What a handler reads of a record (a ``SpoolRecord``, or a test's stand-in)."""

    @property
    def key(self) -> str: ...

    @property
    def data(self) -> bytes: ...


HandlerFactory = Callable[["Settings", "Database"], Handler]


class SpoolError(Exception):
    """A record cannot be appended (a newline inside it, or the disk refused the write)."""


class Spool:
    """The writing end of one stream, for one process (it reopens its own file after a fork)."""

    def __init__(self, root: Path, stream: str, *, fsync: bool = False) -> None:
        self.dir = Path(root) / stream
        self.fsync = fsync
        # Sync workers never contend for it; a threaded server must not interleave two lines
        # or open two files for one process.
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = 0
        self._seq = 0
        self._size = 0

    def append(self, record: bytes) -> None:
        # One record per tracked click: kept free of the list handling of append_many.
        if b"\n" in record:
            raise SpoolError("a spool record cannot contain a newline")
        self._write(record + b"\n")

    def append_many(self, records: Sequence[bytes]) -> None:
        if any(b"\n" in r for r in records):
            raise SpoolError("a spool record cannot contain a newline")
        self._write(b"".join(r + b"\n" for r in records))

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        fd = self._descriptor()
        try:
            written = os.write(fd, data)
            if written != len(data):  # short only on a full disk or a signal
                _write_all(fd, data[written:])
            if self.fsync:
                os.fdatasync(fd)
        except OSError as exc:
            # What was written of the line stays in this file, cut short: never append after
            # it. The next record goes to a new file; the drainer skips the fragment.
            self._close()
            self._seq += 1
            raise SpoolError(f"could not append to the {self.dir.name} spool: {exc}") from exc
        self._size += len(data)
        if self._size >= ROTATE_BYTES:
            self._close()
            self._seq += 1

    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd >= 0 and pid == self._pid:
            return self._fd
        if pid != self._pid:  # first use, or a child after fork: never share the parent's file
            self._fd, self._pid, self._seq = -1, pid, 0
        self.dir.mkdir(parents=True, exist_ok=True)
        heartbeat = self.dir / HEARTBEAT
        if not heartbeat.exists():
            heartbeat.touch()
        while True:
            path = self.dir / f"{HOST}-{pid}-{self._seq:06d}.log"
            if not path.exists():  # a previous process with this pid may have left its files
                break
            self._seq += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = 0
        return self._fd

    def _close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1

    def close(self) -> None:
        self._close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# --- the draining end ---------------------------------------------------------------------


class _File(NamedTuple):
    path: Path
    host: str
    pid: int
    seq: int


def drain(root: Path, stream: str, handle: Handler, *, batch: int = BATCH) -> int:
    """Hand every complete record not yet handled to ``handle``, at most ``batch`` at a time;
    the number handled (0 when another drainer holds the stream)."""
    directory = Path(root) / stream
    if not directory.is_dir():
        return 0
    with _exclusive(directory) as mine:
        if not mine:
            return 0
        offsets = _load_offsets(directory)
        files = _files(directory)
        _drop_stale(directory, files, offsets)
        total = 0
        for f in files:
            total += _drain_file(directory, f, offsets, handle, batch)
            _forget_if_done(directory, f, files, offsets)
        (directory / HEARTBEAT).touch()
        return total


def pending(root: Path, stream: str) -> int:
    """Bytes appended to the stream and not handled yet."""
    directory = Path(root) / stream
    if not directory.is_dir():
        return 0
    offsets = _load_offsets(directory)
    total = 0
    for f in _files(directory):
        with contextlib.suppress(FileNotFoundError):  # deleted by a drainer meanwhile
            total += max(0, f.path.stat().st_size - offsets.get(f.path.name, 0))
    return total


class Backlog(NamedTuple):
    pending_bytes: int
    last_drain_seconds_ago: float | None  # None: the stream was never written
    stalled: bool  # records waiting, and no drain pass for STALLED_AFTER seconds


def backlog(root: Path, stream: str, now: float) -> Backlog:
    """How far the drainer is behind on a stream (``now``: ``time.time()``)."""
    directory = Path(root) / stream
    waiting = pending(root, stream)
    try:
        ago: float | None = max(0.0, now - (directory / HEARTBEAT).stat().st_mtime)
    except FileNotFoundError:
        ago = None
    stalled = waiting > 0 and (ago is None or ago > STALLED_AFTER)
    return Backlog(waiting, None if ago is None else round(ago, 1), stalled)


def _drain_file(directory: Path, f: _File, offsets: dict[str, int], handle: Handler, batch: int) -> int:
    handled = 0
    with f.path.open("rb") as fh:
        while True:
            start = offsets.get(f.path.name, 0)
            fh.seek(start)
            data = fh.read(READ_BYTES)
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) >= READ_BYTES:  # one line longer than a read step: corrupt
                    logger.error("spool %s: a line at %d is too long; skipped", f.path, start)
                    _save(directory, offsets, f.path.name, start + len(data))
                    continue
                return handled
            for records, stop in _batches(f.path.name, data[:end], start, batch):
                if records:
                    handle(records)
                    handled += len(records)
                _save(directory, offsets, f.path.name, stop)


def _batches(name: str, data: bytes, start: int, batch: int) -> Iterator[tuple[list[SpoolRecord], int]]:
    """Lists of records with the offset just after the last one, blank lines skipped."""
    records: list[SpoolRecord] = []
    pos = start
    for line in data[:-1].split(b"\n"):
        if line:
            records.append(SpoolRecord(f"{name}:{pos}", line))
        pos += len(line) + 1
        if len(records) >= batch:
            yield records, pos
            records = []
    yield records, pos


def _forget_if_done(directory: Path, f: _File, files: list[_File], offsets: dict[str, int]) -> None:
    """Delete a file its writer has left once everything in it is handled."""
    if not _writer_done(f, files):
        return
    size = f.path.stat().st_size
    done = offsets.get(f.path.name, 0)
    if done < size:
        # The writer is done, and every complete line was handled: the rest is a fragment.
        logger.error("spool %s: %d bytes cut short by its writer; skipped", f.path, size - done)
    f.path.unlink(missing_ok=True)
    if f.path.name in offsets:
        del offsets[f.path.name]
        _store_offsets(directory, offsets)


def _drop_stale(directory: Path, files: list[_File], offsets: dict[str, int]) -> None:
    names = {f.path.name for f in files}
    stale = [name for name in offsets if name not in names]
    for name in stale:
        del offsets[name]
    if stale:
        _store_offsets(directory, offsets)


def _writer_done(f: _File, files: list[_File]) -> bool:
    if any(o.host == f.host and o.pid == f.pid and o.seq > f.seq for o in files):
        return True
    return f.host == HOST and not _alive(f.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _files(directory: Path) -> list[_File]:
    found = []
    for path in directory.glob("*.log"):
        try:
            host, pid, seq = path.stem.rsplit("-", 2)
            found.append(_File(path, host, int(pid), int(seq)))
        except ValueError:
            logger.warning("spool %s: not a spool file name; left alone", path)
    return sorted(found, key=lambda f: (f.host, f.pid, f.seq))


def _load_offsets(directory: Path) -> dict[str, int]:
    try:
        raw = json.loads((directory / OFFSETS).read_text())
    except FileNotFoundError:
        return {}
    return {str(k): int(v) for k, v in raw.items()}


def _save(directory: Path, offsets: dict[str, int], name: str, offset: int) -> None:
    offsets[name] = offset
    _store_offsets(directory, offsets)


def _store_offsets(directory: Path, offsets: dict[str, int]) -> None:
    tmp = directory / f"{OFFSETS}.tmp"
    tmp.write_text(json.dumps(offsets, separators=(",", ":")))
    os.replace(tmp, directory / OFFSETS)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[bool]:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def parse_each(
    records: Iterable[KeyedLine], parse: Callable[[bytes], T], what: str, log: logging.Logger
) -> list[T]:
    """Each record's line parsed. A line ``parse`` refuses (ValueError) is logged and skipped:
    it would be refused on every pass, so keeping it would block the stream behind it."""
    parsed = []
    for record in records:
        try:
            parsed.append(parse(record.data))
        except ValueError as exc:
            log.error("spool record %s is not %s (%s); skipped", record.key, what, exc)
    return parsed


# --- every registered stream --------------------------------------------------------------


def load_handler(stream: str, settings: Settings, database: Database) -> Handler:
    module, _, name = STREAMS[stream].partition(":")
    factory: HandlerFactory = getattr(importlib.import_module(module), name)
    return factory(settings, database)


def drain_all(
    settings: Settings,
    database: Database,
    handlers: dict[str, Handler] | None = None,
    *,
    batch: int = BATCH,
) -> dict[str, int]:
    """Drain every registered stream once; ``handlers`` caches the built handlers between
    calls. A stream's handler is built only when the stream has something to hand."""
    handlers = {} if handlers is None else handlers
    root = Path(settings.spool_dir)
    counts: dict[str, int] = {}
    for stream in STREAMS:
        if pending(root, stream) == 0:
            continue
        if stream not in handlers:
            handlers[stream] = load_handler(stream, settings, database)
        counts[stream] = drain(root, stream, handlers[stream], batch=batch)
    # Last, what the webhook requests (and the streams above) left for the drainer in the
    # database: the events' index by contact and the facts of clicks.
    module, _, name = QUEUE.partition(":")
    settle: Callable[[Settings, Database], int] = getattr(importlib.import_module(module), name)
    queued = settle(settings, database)
    if queued:
        counts["webhook_queue"] = queued
    return counts


def backlog_size(settings: Settings, database: Database) -> tuple[int, int]:
    """What waits for the drainer, as a value that changes whenever more arrives: the bytes
    pending in every stream, and the mark of the database's queue (``QUEUE_MARK``)."""
    root = Path(settings.spool_dir)
    module, _, name = QUEUE_MARK.partition(":")
    mark: Callable[[Settings, Database], int] = getattr(importlib.import_module(module), name)
    return sum(pending(root, stream) for stream in STREAMS), mark(settings, database)
