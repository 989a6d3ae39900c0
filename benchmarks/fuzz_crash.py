"""Crash-safety fuzz: SIGKILL dd-build at random moments, build again, check; print the figures.

Issue 4, item 2. Each round copies a four-stage project (generate → generate with processors,
an on_success callback and export copies → transform → run) into a fresh folder, starts the
real CLI and SIGKILLs it 1-4 times in a row (each build resuming the one before), lets a build
complete, sometimes forces one stage to rerun and kills that too, then checks:

  * after every kill, every stage.json is readable JSON of the current record format and each
    file it lists (batches, also from its journal; a done stage's outputs) exists as recorded;
  * after the completed build: the outputs (each stage's table, the run stage's files, the
    export copies) equal an uninterrupted build's; no temp file, stale journal or unlisted
    batch file is left; no user call (batch, callback, transform, run command) was made more
    often than once per fresh run plus once per kill whose build had it as its last call (the
    one in flight); and a null build runs nothing.

Half the kills come from a timer (uniform(0, --max-delay) s after the start, less when little
work is left), half from the build itself at a random probe event (a step's entry, an fsync, a
syncfs or a rename into place: a temp file written but not renamed, a file renamed but its
folder not synced, a batch journaled but not yet synced, batches synced but not yet listed
again). Each killed build syncs a stage's batches after every batch or once a second (drawn
from the same RNG). The RNG is seeded: event kills repeat exactly; timer kills land where the
machine's speed puts them. The harness is tests/crash_support.py, shared with
tests/test_crash_safety.py.

    python benchmarks/fuzz_crash.py --kills 200 --seed 1

Then the same on the wider project of tests/crash_support_wide.py (`--wide-kills`, default a
quarter of --kills): a flaky batch retried (its first attempt raises after drawing from
ctx.rng), an on_success callback switched and a run stage's folder output shrunk from 3 part
files to 2 between builds; each completed build must equal an untroubled, uninterrupted fresh
build of the same version (`--windows` adds one kill at each of its named steps).

A share of the killed builds of the four-stage project (`--concurrency-share`, default 0.5)
run its generate stages with batches in flight (2-16, threads or worker processes); the build
that completes is serial. A kill may then cost every batch in flight, and no other.

Another share (`--worker-kill-share`, default 0.1) of those builds is not killed: it runs the
generate stages in 2-4 worker processes, and one worker (a child of the build running
spawn_main) is SIGKILLed once a stage drawn has made K calls (K drawn). The build must fail
that stage cleanly, saying a worker process ended (exit 1), or finish (exit 0), with its
records consistent and no temp file or worker left; the next build resumes as after a kill.

Exit status 1 when any check failed (the figures say which, the PROBLEM lines say where).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import crash_support as cs  # noqa: E402
import crash_support_wide as wide  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200, help="kills in all (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--max-delay", type=float, default=1.5,
                    help="timer kills wait at most this many seconds (default 1.5)")
    ap.add_argument("--timer-share", type=float, default=0.5,
                    help="share of kills by timer; the rest at a probe event (default 0.5)")
    ap.add_argument("--fsync-delay", type=float, default=0.003,
                    help="a slow disk: seconds each fsync waits (default 0.003)")
    ap.add_argument("--windows", action="store_true",
                    help="first, one kill in each named window (crash_support.WINDOWS), then "
                         "the --kills random ones")
    ap.add_argument("--wide-kills", type=int, default=None,
                    help="kills on the wider project (default: a quarter of --kills)")
    ap.add_argument("--concurrency-share", type=float, default=0.5,
                    help="share of the randomly killed builds of the four-stage project that "
                         "run its generate stages concurrently, in threads or worker "
                         "processes (crash_support.CONCURRENT_VARIANTS); the builds that "
                         "complete are serial (default 0.5)")
    ap.add_argument("--worker-kill-share", type=float, default=0.1,
                    help="share of the randomly killed builds of the four-stage project that "
                         "are not killed themselves: they run the generate stages in worker "
                         "processes and one worker is SIGKILLed; the build must fail the stage "
                         "cleanly or finish (crash_support.Fuzzer.worker_kill_once; default 0.1)")
    ap.add_argument("--workdir", help="where the projects go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the projects and logs")
    ap.add_argument("-q", "--quiet", action="store_true", help="print one line per round")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dd-fuzz-crash-"))
    config = cs.Config(kills=args.kills, seed=args.seed, max_delay=args.max_delay,
                       timer_share=args.timer_share, fsync_delay=args.fsync_delay,
                       concurrency_share=args.concurrency_share,
                       worker_kill_share=args.worker_kill_share)

    def progress(line: str) -> None:
        if not args.quiet or not line.startswith("  kill"):
            print(line, flush=True)

    fuzzer = cs.Fuzzer(workdir, config, progress)
    print(f"fuzz_crash: --kills {args.kills} --seed {args.seed} in {workdir}", flush=True)
    started = time.monotonic()
    try:
        fuzzer.prepare()
        if args.windows:  # in addition to the --kills random ones
            fuzzer.kill_sequence(0, [target for target, _, _ in cs.WINDOWS])
            config.kills += len(cs.WINDOWS)
        figures = fuzzer.fuzz()
        figures.wall_s = time.monotonic() - started
        wide_kills = args.kills // 4 if args.wide_kills is None else args.wide_kills
        print(f"\nthe wider project: --wide-kills {wide_kills}", flush=True)
        started = time.monotonic()
        wider = wide.WideFuzzer(workdir / "wide", wide.WideConfig(
            kills=wide_kills, seed=args.seed, max_delay=args.max_delay,
            timer_share=args.timer_share, fsync_delay=args.fsync_delay), progress)
        wider.prepare()
        if args.windows:
            wider.round(1_000, [target for target, _ in wide.WIDE_WINDOWS])
            wider.config.kills += wider.figures.kills
        wide_figures = wider.fuzz() if wide_kills else wider.figures
        wide_figures.wall_s = time.monotonic() - started
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for title, figs in (("the four-stage project", figures),
                        ("the wider project (retries, a switched callback, a folder output)",
                         wide_figures)):
        print(f"\n{title}:")
        for line in figs.lines():
            print(line)
        if figs.problems:
            print(f"\n{len(figs.problems)} problem(s):")
            for text in figs.problems:
                print(f"  {text}")
    return 1 if figures.violations or wide_figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
