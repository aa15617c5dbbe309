"""Exact quantiles over the most recent samples: deterministic, bounded, forgetting old data.

A window of the last `size` samples in a ring of float64 (to evict the oldest)
and, once asked, a sorted copy of it that stays valid until the next sample.
Samples arrive about once per delivery and quantiles are read far more often,
so sorting on demand costs less than keeping the order on every insert, and
two arrays of doubles take a fraction of the memory of Python lists of floats.
The same samples in the same order always give the same answer, so a replay
reproduces every threshold; the window is how the model decays: a sample older
than the last `size` deliveries no longer counts.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


class QuantileWindow:
    """Exact quantiles of the last `size` samples.

    >>> w = QuantileWindow(size=3)
    >>> for x in (5.0, 1.0, 3.0, 9.0):
    ...     w.add(x)
    >>> len(w), w.quantile(0.0), w.quantile(1.0), w.quantile(0.5)
    (3, 1.0, 9.0, 3.0)
    """

    __slots__ = ("size", "ring", "n", "count", "_sorted", "_q", "_at_q")

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.ring: Floats = np.empty(size)
        self.n = 0
        self.count = 0  # every sample ever added, evicted ones included
        self._sorted: Floats | None = None
        self._q = -1.0
        self._at_q = 0.0

    def __len__(self) -> int:
        return self.n

    def add(self, x: float) -> None:
        self.ring[self.count % self.size] = x
        self.count += 1
        if self.n < self.size:
            self.n += 1
        self._sorted = None

    @property
    def sorted(self) -> Floats:
        """The samples in ascending order (a fresh sort only after a new sample)."""
        s = self._sorted
        if s is None:
            s = self._sorted = np.sort(self.ring[: self.n])
            self._q = -1.0
        return s

    def quantile(self, q: float) -> float:
        """The `q` quantile by nearest rank; the window must not be empty."""
        if not self.n:
            raise ValueError("no samples")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        s = self.sorted
        if q != self._q:
            self._q, self._at_q = q, float(s[max(0, math.ceil(q * self.n) - 1)])
        return self._at_q

    def share_above(self, x: float) -> float:
        """The fraction of samples strictly greater than `x`."""
        if not self.n:
            return 0.0
        return (self.n - int(np.searchsorted(self.sorted, x, side="right"))) / self.n


class PairWindow:
    """The last `size` pairs (a, b): how many of those with a > x have (a - x) + b > y.

    The conditional-survival count of the delay model: among recent trips that
    stayed longer than `x` in a stage, how many would overshoot a slack of `y`.

    >>> w = PairWindow(size=4)
    >>> for a, b in ((1.0, 5.0), (2.0, 1.0), (3.0, 4.0), (4.0, 0.5)):
    ...     w.add(a, b)
    >>> w.longer_than(1.5, 2.0)
    (3, 2)
    """

    __slots__ = ("size", "a", "b", "n", "count", "_a", "_b", "totals")

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.a: Floats = np.empty(size)
        self.b: Floats = np.empty(size)
        self.n = 0
        self.count = 0
        self._a: Floats | None = None
        self._b: Floats | None = None
        self.totals = QuantileWindow(size)  # a + b

    def __len__(self) -> int:
        return self.n

    def add(self, a: float, b: float) -> None:
        i = self.count % self.size
        self.a[i], self.b[i] = a, b
        self.count += 1
        if self.n < self.size:
            self.n += 1
        self._a = None
        self.totals.add(a + b)

    def _by_a(self) -> tuple[Floats, Floats]:
        if self._a is None or self._b is None:
            order = np.argsort(self.a[: self.n], kind="stable")
            self._a, self._b = self.a[: self.n][order], self.b[: self.n][order]
        return self._a, self._b

    def longer_than(self, x: float, y: float) -> tuple[int, int]:
        """(pairs with a > x, those of them with (a - x) + b > y)."""
        a, b = self._by_a()
        i = int(np.searchsorted(a, x, side="right"))
        if i == self.n:
            return 0, 0
        return self.n - i, int(np.count_nonzero((a[i:] - x) + b[i:] > y))
