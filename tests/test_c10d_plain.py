"""Progress off the live display: the wording of a live line (figures from Reporter.progress),
plain stable lines off a terminal, the API logger's events, several stages reporting from
threads at once on a pseudo-terminal, and the display library loaded only when a build runs
a stage with stderr on a terminal."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CHAIN, STAGE_CODE, Project
from test_c10d_terminal import Terminal

from buildtool.api import LogReporter
from buildtool.live import StageProgress, progress_text

# ---------------------------------------------------------------- the live line's wording


def _line(calls: list[tuple[float, int, int | None, dict[str, int]]], started: float = 0.0) -> str:
    p = StageProgress(started=started)
    for now, done, total, extra in calls:
        p.update(done, total, extra.get("in_flight", 0), extra.get("rows", 0),
                 extra.get("retries", 0), now=now)
    return progress_text("s", p)


def test_no_rate_and_no_eta_before_a_batch_of_this_run_finished() -> None:
    assert _line([(0.5, 0, 10, {"in_flight": 4})]) == "  s: 0/10 batches · 4 in flight"
    assert _line([(0.5, 0, 1, {})]) == "  s: 0/1 batch"


def test_rate_over_this_runs_rows_and_eta_from_the_remaining_batches() -> None:
    calls = [(0.1, 0, 10, {}), (2.0, 1, 10, {"rows": 20, "in_flight": 2}),
             (4.0, 2, 10, {"rows": 40, "in_flight": 2, "retries": 1})]
    assert _line(calls) == "  s: 2/10 batches · 10.0 rows/s · ETA 16s · 2 in flight · 1 retry"


def test_a_resume_counts_only_the_batches_it_runs() -> None:
    """4 of 10 kept: one batch in 2 s leaves 5, ETA 10 s (not 6 × 0.4 s)."""
    calls = [(0.0, 4, 10, {}), (2.0, 5, 10, {"rows": 10, "retries": 3})]
    assert _line(calls) == "  s: 5/10 batches · 5.0 rows/s · ETA 10s · 3 retries"


def test_a_batch_starting_does_not_move_the_rate_clock() -> None:
    """Calls that only change batches in flight leave the time of the last batch done."""
    calls = [(0.0, 0, 4, {}), (1.0, 1, 4, {"rows": 5}), (9.0, 1, 4, {"rows": 5, "in_flight": 3})]
    assert _line(calls) == "  s: 1/4 batches · 5.0 rows/s · ETA 3s · 3 in flight"


@pytest.mark.parametrize(("seconds", "shown"), [(0.2, "1s"), (59.4, "59s"), (61, "1m 01s"),
                                                (3599, "59m 59s"), (7260, "2h 01m")])
def test_eta_wording(seconds: float, shown: str) -> None:
    assert _line([(0.0, 0, 2, {}), (seconds, 1, 2, {})]) == f"  s: 1/2 batches · ETA {shown}"


def test_a_stage_without_batches_is_running_and_a_done_one_has_no_eta() -> None:
    assert _line([(1.0, 0, None, {})]) == "  s: running"
    assert _line([(0.0, 0, 2, {}), (1.0, 2, 2, {"rows": 250})]) == "  s: 2/2 batches · 250 rows/s"


# ---------------------------------------------------------------- the API's logger


def test_the_api_logger_gets_every_progress_call_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    reporter = LogReporter()
    with caplog.at_level(logging.DEBUG, logger="buildtool"):
        reporter.progress("s", 1, 4)
        reporter.progress("s", 2, 4, in_flight=3, rows=40, retries=1)
        reporter.progress("s", 0, None)
    assert [r.getMessage() for r in caplog.records] == [
        "s: batch 1/4", "s: batch 2/4 (3 in flight, 40 rows, 1 retry)"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_a_build_through_the_api_logs_its_batches(project: Project,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import buildtool

    with caplog.at_level(logging.DEBUG, logger="buildtool"):
        report = buildtool.build(project.root / "Workflowfile")
    assert report.ok
    batches = [r.getMessage() for r in caplog.records if ": batch " in r.getMessage()]
    assert batches == [f"a: batch {i}/4" for i in range(5)] + \
        [f"b: batch {i}/6" for i in range(7)] + ["c: batch 0/1", "c: batch 1/1"]


# ---------------------------------------------------------------- off a terminal


def _normalised(text: str) -> str:
    return re.sub(r" in [\d.]+s$", " in Ns", text, flags=re.M)


def _fresh(root: Path) -> Project:
    project = Project(root)
    project.write("code/stages.py", STAGE_CODE)
    project.write("Workflowfile", CHAIN)
    return project


def test_off_a_terminal_two_builds_print_the_same_plain_lines(tmp_path: Path) -> None:
    one, two = (_fresh(tmp_path / name).run() for name in ("one", "two"))
    assert one.code == two.code == 0
    assert _normalised(one.stdout) == _normalised(two.stdout)
    assert _normalised(one.stderr) == _normalised(two.stderr)
    for text in (one.stdout, one.stderr):
        assert "\r" not in text and "\x1b" not in text
    assert one.stderr.splitlines() == [f"▶ {s}: run: never built: no record" for s in "abc"]
    assert _normalised(one.stdout).splitlines() == [
        "✓ a: completed (20 rows, 4 of 4 batches run) in Ns",
        "✓ b: completed (60 rows, 6 of 6 batches run) in Ns",
        "✓ c: completed (1 row, 1 of 1 batch run) in Ns"]


def test_off_a_terminal_verbose_says_each_batch_once(project: Project) -> None:
    result = project.run("-v")
    assert result.code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.endswith(" done")]
    assert said == [f"  a: {i} of 4 batches done" for i in range(5)] + \
        [f"  b: {i} of 6 batches done" for i in range(7)] + \
        ["  c: 0 of 1 batch done", "  c: 1 of 1 batch done"]


def test_quiet_off_a_terminal_prints_nothing(project: Project) -> None:
    result = project.run("-q")
    assert result.code == 0 and result.stdout == result.stderr == ""


# ---------------------------------------------------------------- several stages at once

THREADS = '''
import sys, threading
from argparse import Namespace
from pathlib import Path
from buildtool.console import Console
from buildtool.plan import Decision
from buildtool.report import StageResult
from buildtool.reporter import TextReporter

here = Path(sys.argv[1])
out = Console(Namespace(json=False, quiet=False, verbose=False))
reporter = TextReporter(out, False)
names = ["first", "second", "third"]
all_live = threading.Barrier(len(names) + 1)
release = {name: threading.Event() for name in names}

def stage(name):
    decision = Decision(name, "run", batches_total=5)
    reporter.started(decision)
    for i in range(300):  # many calls from every thread at once
        reporter.progress(name, 1, 5, in_flight=i % 4, rows=10, retries=0)
    reporter.progress(name, 2, 5, in_flight=3, rows=20, retries=1)
    reporter.note(name, "a note from " + name)
    all_live.wait()
    release[name].wait()
    reporter.progress(name, 5, 5, rows=50)
    reporter.finished(StageResult(name, decision, "completed", 50, 5, 5, duration_s=0.5))

threads = [threading.Thread(target=stage, args=(n,)) for n in names]
for t in threads:
    t.start()
all_live.wait()
(here / "live").write_text("x")
for name in ["second", "first", "third"]:  # the middle line goes first
    while not (here / ("go-" + name)).exists():
        pass
    release[name].set()
for t in threads:
    t.join()
'''


def test_several_stages_report_from_threads_at_once(tmp_path: Path) -> None:
    project = Project(tmp_path)
    script = project.write("threads.py", THREADS)
    project.write("Workflowfile", "workflow: x\nstages: {}\n")  # for Project.env only
    term = Terminal(project, [str(tmp_path)], cols=80, script=script)
    project.wait_for("live", term.proc)
    term.wait_for(lambda t: t.count("a note from") == 3, "three notes")
    lines = term.screen().lines()
    live = [line for line in lines if " batches · " in line]
    assert len(live) == 3 and lines[-3:] == live, lines  # one line each, at the bottom
    assert all(re.fullmatch(r"  \w+: 2/5 batches · [\d.]+ rows/s · ETA \d+s · 3 in flight · "
                            r"1 retry", line) for line in live), live
    assert sorted(line.split(":")[0].strip() for line in live) == ["first", "second", "third"]
    for name in ("second", "first", "third"):
        (tmp_path / f"go-{name}").write_text("x")
        term.wait_for(lambda t, n=name: f"✓ {n}: completed" in t, f"{name} done")
    code, shown, _ = term.finish()
    assert code == 0, shown
    final = term.screen().lines()
    assert sorted(final) == sorted(
        [f"▶ {n}: run:" for n in ("first", "second", "third")] +
        [f"  {n}: a note from {n}" for n in ("first", "second", "third")] +
        [f"✓ {n}: completed (50 rows, 5 of 5 batches run) in 0.5s"
         for n in ("first", "second", "third")]), final
    assert [line[2:].split(":")[0] for line in final if line.startswith("✓")] == \
        ["second", "first", "third"]


# ---------------------------------------------------------------- when rich is loaded

PROBE = textwrap.dedent('''
    import sys
    from buildtool.cli import main
    code = main(sys.argv[2:])
    with open(sys.argv[1], "w") as fh:
        fh.write(f"{code} {'rich' in sys.modules}")
    ''')


def _loaded(project: Project, args: list[str], on_terminal: bool) -> tuple[int, bool]:
    """Run dd-build ARGS in a Python process of its own (stderr on a terminal or a pipe); its
    exit code and whether `rich` was imported by the end."""
    answer = project.root.parent / "probe-answer"
    answer.unlink(missing_ok=True)
    command = [sys.executable, "-c", PROBE, str(answer), *args]
    env = project.env(TERM="xterm")
    if on_terminal:
        master, slave = pty.openpty()
        proc = subprocess.Popen(command, cwd=project.root, env=env, stdin=slave, stdout=slave,
                                stderr=slave, close_fds=True)
        os.close(slave)
        while True:  # drain what it shows, until it closes the terminal
            try:
                if not os.read(master, 4096):
                    break
            except OSError:
                break
        os.close(master)
        proc.wait(timeout=120)
    else:
        subprocess.run(command, cwd=project.root, env=env, capture_output=True, timeout=120)
    code, loaded = answer.read_text().split()
    return int(code), loaded == "True"


def test_rich_is_loaded_only_when_a_build_runs_a_stage_on_a_terminal(project: Project) -> None:
    assert _loaded(project, [], on_terminal=False) == (0, False)  # it ran all three stages
    assert _loaded(project, ["--force", "a", "-q"], on_terminal=True) == (0, False)
    assert _loaded(project, ["--force", "a", "--json"], on_terminal=True) == (0, False)
    assert _loaded(project, [], on_terminal=True) == (0, False)  # a null build
    assert _loaded(project, ["--version"], on_terminal=True) == (0, False)
    assert _loaded(project, ["status"], on_terminal=True) == (0, False)
    assert _loaded(project, ["--force", "a"], on_terminal=True) == (0, True)


def test_the_live_module_itself_does_not_import_rich() -> None:
    code = "import sys, buildtool.reporter, buildtool.live; print('rich' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


TALL = '''
import sys
from argparse import Namespace
from pathlib import Path
from buildtool.console import Console
from buildtool.plan import Decision
from buildtool.report import StageResult
from buildtool.reporter import TextReporter

here = Path(sys.argv[1])
reporter = TextReporter(Console(Namespace(json=False, quiet=False, verbose=False)), False)
names = [f"s{i}" for i in range(6)]
for name in names:
    reporter.started(Decision(name, "run"))
    reporter.progress(name, 0, 3)
(here / "live").write_text("x")
while not (here / "go").exists():
    pass
for name in names:
    reporter.finished(StageResult(name, Decision(name, "run"), "completed", 3, 3, 3, duration_s=1))
'''


def test_more_running_stages_than_the_terminal_has_lines(tmp_path: Path) -> None:
    """LINES=5: four lines of the live area, the last saying how many more run."""
    project = Project(tmp_path)
    script = project.write("tall.py", TALL)
    term = Terminal(project, [str(tmp_path)], cols=80, script=script, LINES="5")
    project.wait_for("live", term.proc)
    term.wait_for(lambda t: "more running" in t and t.count("▶") == 6, "the live area")
    assert term.screen().lines()[-4:] == [
        "  s0: 0/3 batches", "  s1: 0/3 batches", "  s2: 0/3 batches", "  … and 3 more running"]
    (tmp_path / "go").write_text("x")
    code, shown, _ = term.finish()
    assert code == 0, shown
    lines = term.screen().lines()
    assert lines == [f"▶ s{i}: run:" for i in range(6)] + \
        [f"✓ s{i}: completed (3 rows, 3 of 3 batches run) in 1.0s" for i in range(6)]
