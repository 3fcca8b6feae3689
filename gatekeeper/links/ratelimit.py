"""A token bucket per client address for the public link endpoints, shared by every process
of the machine.

Each address may burst up to ``per_minute`` requests, refilled continuously at ``per_minute`` a
minute. The buckets live in a small memory-mapped file (``RATE_LIMIT_FILE`` in the spool
directory, local to the machine like the spool), so the limit holds for the address whatever
gunicorn worker answers it: a per-process table would let an address through N times the
limit with N workers. Without a file (a library user, the tests) the table is anonymous shared
memory, shared with the processes forked after it was made.

The table is a fixed array of buckets indexed by a keyed hash of the address (the key is random,
written in the file's header when it is created), so its size never grows with a flood of
addresses and nobody can pick two addresses that share a bucket. Two addresses that do share
one (one chance in ``SLOTS``) share its limit: the cautious side. A bucket is read and written
without a lock: two processes updating one bucket in the same microsecond may lose one hit,
which lets one request more through, never one less. The clock is injectable so tests can step
time instead of sleeping.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import struct
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

SLOTS = 1 << 16
# A bucket: (tokens used and not yet refilled, when it was last touched). All zeros is a full,
# untouched bucket, so a new table needs no initialisation.
_BUCKET = struct.Struct("<dd")
_MAGIC = b"gkrate1\0"
_KEY_BYTES = 16
_HEADER = len(_MAGIC) + _KEY_BYTES
SIZE = _HEADER + SLOTS * _BUCKET.size  # 1 MiB and a few bytes
RATE_LIMIT_FILE = "ratelimit.bin"
SLOT_MEMO = 4096


class RateLimiter:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, path: Path | None = None
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._table, self._key = _open_table(path)
        self._slots: dict[str, int] = {}  # address -> its bucket's offset, a bounded memo

    def _slot(self, address: str) -> int:
        # The keyed hash is most of a hit's cost, and a worker sees the same few addresses
        # again and again (mailbox providers, proxies, a person's next click).
        digest = hashlib.blake2b(address.encode(), key=self._key, digest_size=8).digest()
        at = _HEADER + int.from_bytes(digest, "little") % SLOTS * _BUCKET.size
        if len(self._slots) >= SLOT_MEMO:
            self._slots.clear()
        self._slots[address] = at
        return at

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def hit(self, address: str) -> float:
        """Take one token for ``address``: 0.0 when allowed, else seconds until the next one."""
        if not self.enabled:
            return 0.0
        cap = float(self.per_minute)
        rate = cap / 60.0
        at = self._slots.get(address)
        if at is None:
            at = self._slot(address)
        stored: tuple[float, float] = _BUCKET.unpack_from(self._table, at)
        now = self.clock()
        # Never a negative interval: the monotonic clock starts again at a reboot while the
        # file stays, and a bucket must then refill from now, not grow.
        used = max(0.0, stored[0] - max(0.0, now - stored[1]) * rate)
        if used + 1.0 > cap:
            _BUCKET.pack_into(self._table, at, used, now)
            return (used + 1.0 - cap) / rate
        _BUCKET.pack_into(self._table, at, used + 1.0, now)
        return 0.0


def _open_table(path: Path | None) -> tuple[mmap.mmap, bytes]:
    if path is not None:
        try:
            return _file_table(path)
        except OSError:
            # An unwritable spool directory must not take the pages down: the limit then
            # holds per process, as logged.
            logger.exception("rate limits: cannot use %s; each process keeps its own table", path)
    table = mmap.mmap(-1, SIZE)  # anonymous, MAP_SHARED: shared with children forked later
    table[: len(_MAGIC)] = _MAGIC
    key = secrets.token_bytes(_KEY_BYTES)
    table[len(_MAGIC) : _HEADER] = key
    return table, key


def _file_table(path: Path) -> tuple[mmap.mmap, bytes]:
    """Map the machine's table, creating it the first time, under a lock so that processes
    starting together all map the same one. One of another size or format (an older release)
    is replaced; processes still mapping the old one keep it until they restart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _map_existing(path)
        if found is not None:
            return found
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with open(temporary, "wb") as fh:
            fh.write(_MAGIC + secrets.token_bytes(_KEY_BYTES))
            fh.truncate(SIZE)
        os.replace(temporary, path)
        created = _map_existing(path)
    if created is None:
        raise OSError(f"the rate-limit table {path} could not be read back")
    return created


def _map_existing(path: Path) -> tuple[mmap.mmap, bytes] | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size != SIZE:
            return None
        table = mmap.mmap(fd, SIZE)  # the mapping outlives the descriptor
    finally:
        os.close(fd)
    if table[: len(_MAGIC)] != _MAGIC:
        table.close()
        return None
    return table, bytes(table[len(_MAGIC) : _HEADER])
