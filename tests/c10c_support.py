"""Shared by the rate-limit tests: the bounds a log of requests must keep, checked by counts
(never by how long anything took)."""

from __future__ import annotations

from collections.abc import Sequence


def most_in_window(starts: Sequence[float], window: float = 1.0) -> int:
    """The most request starts within any closed window of `window` seconds."""
    times = sorted(starts)
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] < t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_in_flight(spans: Sequence[tuple[float, float]]) -> int:
    """The most requests running at one moment (a request that ends at the moment another
    starts does not overlap it: each span is recorded inside its request)."""
    events = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def check_bounds(spans: Sequence[tuple[float, float]], rate: float | None, cap: int | None,
                 burst: int = 1) -> None:
    """Every 1-second window holds at most rate + burst starts; at most `cap` in flight."""
    if rate is not None:
        found = most_in_window([start for start, _ in spans])
        assert found <= rate * 1.0 + burst, f"{found} starts within 1 s at {rate}/s"
    if cap is not None:
        found = most_in_flight(spans)
        assert found <= cap, f"{found} in flight with a cap of {cap}"
