"""Exact quantiles over the most recent samples: deterministic, bounded, forgetting old data.

A window of the last `size` samples kept twice, in arrival order (to evict the
oldest) and sorted (to answer a quantile in O(1)). The same samples in the
same order always give the same answer, so a replay reproduces every
threshold; the window is how the model decays: a sample older than the last
`size` deliveries no longer counts.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class QuantileWindow:
    """Exact quantiles of the last `size` samples.

    >>> w = QuantileWindow(size=3)
    >>> for x in (5.0, 1.0, 3.0, 9.0):
    ...     w.add(x)
    >>> len(w), w.quantile(0.0), w.quantile(1.0), w.quantile(0.5)
    (3, 1.0, 9.0, 3.0)
    """

    __slots__ = ("size", "order", "sorted", "count")

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.order: deque[float] = deque()
        self.sorted: list[float] = []
        self.count = 0  # every sample ever added, evicted ones included

    def __len__(self) -> int:
        return len(self.sorted)

    def add(self, x: float) -> None:
        if len(self.order) == self.size:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(x)
        bisect.insort(self.sorted, x)
        self.count += 1

    def quantile(self, q: float) -> float:
        """The `q` quantile by nearest rank; the window must not be empty."""
        if not self.sorted:
            raise ValueError("no samples")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        return self.sorted[max(0, math.ceil(q * len(self.sorted)) - 1)]

    def share_above(self, x: float) -> float:
        """The fraction of samples strictly greater than `x`."""
        if not self.sorted:
            return 0.0
        return (len(self.sorted) - bisect.bisect_right(self.sorted, x)) / len(self.sorted)
