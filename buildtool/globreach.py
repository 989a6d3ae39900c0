"""What a glob can reach, decided on paths alone (no disk): used at load to match `inputs:`,
`seed:` and `code:` globs against the outputs stages declare, which may not exist yet.

Globs are matched as `glob.glob(pattern, recursive=True)` expands them: segment by segment
(`*`, `?` and `[...]` never cross a `/`), `**` as a whole segment spans any number of
segments, and a name starting with `.` is matched only by a pattern segment that starts
with `.` (hidden files, and hidden folders under `**`, are skipped).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import Enum

_MAGIC = re.compile(r"[*?[]")


class Reach(Enum):
    """How a glob reaches a path P (best first)."""

    MATCHES = "matches"  # the glob matches P itself
    INSIDE = "inside"  # the glob can match a file inside P, when P is a folder
    HOLDS = "holds"  # the glob names a folder that holds P


def is_glob(text: str) -> bool:
    """Whether `text` is a glob rather than a plain path: it holds `*`, `?` or `[`, as
    `glob.glob` decides. So `a[` (which matches the name `a[`) and `[*]` (glob.escape's
    spelling of a literal `*`) are globs too: matched, not looked up as one path."""
    return _MAGIC.search(text) is not None


@dataclass(frozen=True)
class Segment:
    """One `/`-separated part of a glob."""

    text: str
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, text: str) -> Segment:
        if text == "**" or not is_glob(text):
            return cls(text)
        return cls(text, re.compile(fnmatch.translate(text)))

    def matches(self, name: str) -> bool:
        if self.regex is None:
            return name == self.text
        if name.startswith(".") and not self.text.startswith("."):
            return False
        return self.regex.match(name) is not None


class Glob:
    """A project-relative posix glob, compiled once and matched against many paths."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.segments = tuple(Segment.of(s) for s in pattern.split("/"))

    def reach(self, path: str, maybe_folder: bool = True) -> Reach | None:
        """How this glob can reach `path` (a project-relative posix path), or None.

        `maybe_folder`: `path` may be a folder, so the glob may match files inside it."""
        names = path.split("/")
        return _best(_Matcher(self.segments, names, maybe_folder).outcomes(0, 0))


def _best(outcomes: frozenset[Reach]) -> Reach | None:
    for reach in Reach:
        if reach in outcomes:
            return reach
    return None


@dataclass
class _Matcher:
    """A glob's segments, matched against names, with what matching found so far."""

    segments: tuple[Segment, ...]
    names: list[str]
    maybe_folder: bool
    memo: dict[tuple[int, int], frozenset[Reach]] = field(default_factory=dict)

    def outcomes(self, gi: int, ni: int) -> frozenset[Reach]:
        """What segments[gi:] can do against names[ni:] (memoised: `**` branches)."""
        key = (gi, ni)
        if key not in self.memo:
            self.memo[key] = self._outcomes(gi, ni)
        return self.memo[key]

    def _outcomes(self, gi: int, ni: int) -> frozenset[Reach]:
        rest = self.segments[gi:]
        if ni == len(self.names):  # the whole path is matched
            if all(s.text == "**" for s in rest):
                return frozenset({Reach.MATCHES})
            return frozenset({Reach.INSIDE}) if self.maybe_folder else frozenset()
        if not rest:  # the glob ends on a folder that holds the path (not on the project)
            return frozenset({Reach.HOLDS}) if ni > 0 else frozenset()
        segment, name = rest[0], self.names[ni]
        if segment.text == "**":
            found = self.outcomes(gi + 1, ni)
            if not name.startswith("."):
                found |= self.outcomes(gi, ni + 1)
            return found
        return self.outcomes(gi + 1, ni + 1) if segment.matches(name) else frozenset()
