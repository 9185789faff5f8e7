"""Summaries over seeds: the median and the full range (min-max).

Medians, not means: with three seeds one run that stalls would drag a mean (and every ratio made from it)
anywhere; the median is one of the runs. Min-max rather than an IQR or a std: with 3-5 seeds those are
barely defined, while min-max shows every seed's outcome and is what the plots' error bars draw.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DASH = "—"


@dataclass(frozen=True)
class Spread:
    """Median and range of one quantity over the seeds that have it."""

    median: float
    lo: float
    hi: float
    n: int

    @property
    def err(self) -> tuple[float, float]:
        """Distances below and above the median (matplotlib's asymmetric error bars)."""
        return self.median - self.lo, self.hi - self.median


def spread(values: Iterable[float | None]) -> Spread | None:
    """Median and min-max of the values that exist; None when none do."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def fmt_spread(s: Spread | None, fmt: Callable[[float], str]) -> str:
    """`0.8047 [0.8012–0.8061]`, or just the median when all seeds agree (one seed, or equal values)."""
    if s is None:
        return DASH
    if s.lo == s.hi:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.lo)}–{fmt(s.hi)}]"
