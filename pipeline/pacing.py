"""Pacing a sender to a rate: `provenance produce --rate N`."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.errors import ConfigError


class TokenBucket:
    """Admit `rate` messages a second on average, handing out tokens in batches.

    Sleeping once per message caps a Python loop at a few thousand a second and
    jitters; granting a batch at a time keeps the average exact at any rate.

    >>> now = [0.0]
    >>> bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> sum(bucket.take(500) for _ in range(50)), round(now[0], 2)
    (500, 0.5)
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self.sleep = sleep
        self._tokens = 0.0
        self._last = clock()

    def take(self, wanted: int) -> int:
        """Block until tokens are available; return how many of `wanted` were granted (at least 1)."""
        least = max(1.0, min(float(wanted), self.rate / 100, self.burst))
        while True:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            # The epsilon keeps float rounding from asking for a sleep too short to advance the clock.
            if self._tokens + 1e-9 >= least:
                granted = min(wanted, int(self._tokens + 1e-9))
                self._tokens -= granted
                return granted
            self.sleep((least - self._tokens) / self.rate)
