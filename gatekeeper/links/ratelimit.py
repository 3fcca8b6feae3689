"""A small in-process token bucket per client address for the public link endpoints.

Each address may burst up to ``per_minute`` requests, refilled continuously at ``per_minute`` a
minute. It lives in the worker process: with N gunicorn workers an address gets at most N times
the limit, which is enough to stop a loop hammering the pages without a shared store. The clock
is injectable so tests can step time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Enough to remember every address seen in a few minutes of heavy traffic; past it, addresses
# whose bucket has refilled completely are forgotten (they would start full anyway).
MAX_TRACKED = 50_000


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def hit(self, address: str) -> float:
        """Take one token for ``address``: 0.0 when allowed, else seconds until the next one."""
        if not self.enabled:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(address, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[address] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_TRACKED:
                self._forget_idle(now, rate)
            return 0.0

    def _forget_idle(self, now: float, rate: float) -> None:
        full = [a for a, (t, at) in self._buckets.items() if t + (now - at) * rate >= self.per_minute]
        for address in full:
            del self._buckets[address]
        if len(self._buckets) > MAX_TRACKED:  # all busy: a flood of addresses; start afresh
            self._buckets.clear()
