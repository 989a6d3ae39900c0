"""The environment variables that tune timings (`DD_BUILD_*_S`), read in one place: a value
that is no number of seconds is a UsageError naming it before a build runs anything (`check`),
and never an error where the value is used (`seconds`, which then gives the default)."""

from __future__ import annotations

import math
import os

from .errors import UsageError

# name -> (default, whether 0 is allowed)
KNOBS: dict[str, tuple[float, bool]] = {
    "DD_BUILD_SYNC_INTERVAL_S": (1.0, True),  # stagerun.py: checkpoint fsyncs
    "DD_BUILD_RETRY_BASE_S": (1.0, True),  # kinds/generate.py: retry backoff
    "DD_BUILD_DASK_CONNECT_TIMEOUT_S": (10.0, False),  # daskexec.py
    "DD_BUILD_DASK_LOST_AFTER_S": (10.0, False),  # daskwork.py
}


def seconds(name: str) -> float:
    """The knob's value, or its default when it is unset or not valid (`check` says so)."""
    default, _ = KNOBS[name]
    try:
        return _value(name)
    except UsageError:
        return default


def check() -> None:
    """Every knob set in the environment is a valid number of seconds."""
    for name in KNOBS:
        _value(name)


def _value(name: str) -> float:
    default, zero = KNOBS[name]
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        floor = "0 or more" if zero else "above 0"
        raise UsageError(f"${name} is not a number of seconds {floor} ({text!r})",
                         hint=f"set it to e.g. {default:g}, or unset it")
    return value
