"""Live progress on pseudo-terminals of drawn sizes, 0x0 (a terminal that reports none: 80x24)
and very narrow or short ones among them: four stages run at once (`-j 4`), each holding its
first batch until all four hold theirs (a synchronisation, never a timing), then finish. On
every size the live lines must never wrap (each frame fits the width), the live area must
never be taller than the terminal (a redraw never moves the cursor above the visible screen),
and the build must end with what a build off a terminal prints: a `▶` and a `✓` line per stage.
A terminal of fewer than 10 columns or 2 rows shows no live line at all (one would wrap, or
scroll off before it is erased: found by this test; they were drawn 10 wide and 2 high).

The terminal is test_c10d_terminal's `Screen`, given a height: rows scrolled off the top can
no longer be reached, and a cursor-up past the top fails the test. DD_GEN_TTY_EXAMPLES=N adds
N sizes drawn from a seeded RNG to the fixed list.
"""

from __future__ import annotations

import os
import random
import re

import pytest
from conftest import Project
from test_c10d_terminal import LIVE, Screen, Terminal, _no_build_left_running  # noqa: F401

STAGES = ["answers_from_the_model", "q", "scores-7", "x_" * 12 + "end"]
CODE = '''
import time
from pathlib import Path

HERE = Path(__file__).parent

def rows(ctx):
    """Batch 0 says it began, then waits for `go`: all four stages are running at once."""
    if ctx.batch_index == 0:
        (HERE / f"reached-{ctx.stage_name}").write_text("x")
        while not (HERE / "go").exists():
            time.sleep(0.01)
    return [{"i": ctx.offset + k} for k in range(ctx.size)]
'''
WORKFLOW = "workflow: sizes\nstages:\n" + "".join(
    f"  {name}:\n    generate: code/gated.py:rows\n    num_records: 6\n    batch_size: 2\n"
    for name in STAGES)

START = re.compile(r"▶ (\S+): run: never built: no record$")
DONE = re.compile(r"✓ (\S+): completed \(6 rows, 3 of 3 batches run\) in [\d.]+s$")

# (rows, cols): none reported, one cell, one row, one column, narrower than any live line,
# shorter than the four live lines, an ordinary one, a wide and short one.
SIZES = [(0, 0), (1, 1), (1, 12), (2, 20), (3, 5), (5, 1), (4, 9), (24, 80), (2, 200), (6, 10),
         (0, 30), (3, 0)]
_EXTRA = int(os.environ.get("DD_GEN_TTY_EXAMPLES", "0"))
_rng = random.Random(1130)
SIZES += [(_rng.choice([0, 1, 2, 3, _rng.randint(1, 60)]), _rng.choice([0, 1, _rng.randint(1, 120)]))
          for _ in range(_EXTRA)]


class SizedScreen(Screen):
    """A Screen of `height` rows: the top row shown follows the cursor down; the cursor can
    never be moved above it (what scrolled off a terminal cannot be redrawn)."""

    def __init__(self, cols: int, height: int) -> None:
        super().__init__(cols)
        self.height = height
        self.top = 0

    def _down(self) -> None:
        super()._down()
        self.top = max(self.top, self.row - self.height + 1)

    def _csi(self, private: str, arg: str, code: str) -> None:
        if not private and code == "A":
            up = int(arg) if arg else 1
            assert self.row - up >= self.top, (
                f"a redraw moves {up} rows up from row {self.row}, above the top of a "
                f"{self.height}-row terminal (row {self.top})")
        super()._csi(private, arg, code)

    def lines(self, keep_wrapped_spaces: bool = True) -> list[str]:
        return super().lines(keep_wrapped_spaces)


@pytest.mark.parametrize(("rows", "cols"), SIZES, ids=[f"{r}x{c}" for r, c in SIZES])
def test_the_live_area_fits_any_terminal(project: Project, rows: int, cols: int) -> None:
    project.write("code/gated.py", CODE)
    project.write("Workflowfile", WORKFLOW)
    term = Terminal(project, ["-j", "4"], cols=cols, rows=rows)
    for name in STAGES:
        project.wait_for(f"code/reached-{name}", term.proc)
    (project.root / "code" / "go").write_text("x")
    code, shown, _ = term.finish()
    assert code == 0, shown
    width, height = cols or 80, rows or 24
    screen = SizedScreen(width, height)
    screen.feed(shown)
    frames = [f for f in re.split(r"\x1b\[2K|\r\n|\r|\n", re.sub(r"\x1b\[\d*A|\x1b\[\?25[hl]",
                                                                  "\r", shown)) if LIVE.search(f)]
    if width < 10 or height < 2:  # too small for a live line: none is drawn
        assert frames == [], frames
    else:
        assert frames, shown  # the live area was drawn
    assert all(len(f) <= width for f in frames), [f for f in frames if len(f) > width]
    lines = screen.lines()
    assert len(lines) == 2 * len(STAGES), lines
    starts = sorted(m.group(1) for line in lines if (m := START.match(line)))
    done = sorted(m.group(1) for line in lines if (m := DONE.match(line)))
    assert starts == done == sorted(STAGES), lines
    assert screen.cursor_shown

