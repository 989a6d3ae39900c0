"""Correctness fuzzing: many random workflows and edit sequences, and the violations found.

Runs the same examples as `tests/test_fuzz_correctness.py` (the generator is in
`tests/fuzz_workflows.py`, the model in `tests/fuzz_support.py`; read their docstrings for what
is generated and checked), but many of them and outside pytest. Example i uses seed SEED + i,
so a failure replays with `--examples 1 --seed X` (and the same `--focus`).

`--focus` raises one hard-edge class of the generator (see fuzz_workflows.FOCUS): types
(type-only param edits, nested params), globs (globs and paths touching other stages' outputs),
folders (run stages with folder outputs, commands that write nothing), callbacks (on_success
added, switched, removed; processors; export copies), retries (a flaky first attempt),
helpers (edits of imported helper modules), mutation (code mutating nested params); and
issue 8's step model: steps (processors, the callback and its version, allow_empty and export
copies added, switched and removed; processed, callback and export files damaged; stages with
no rows), overrides (`dd-build override S` with a review derived from S's output, then edits
of S and of its upstreams while the review is held, `override --release`, `--force S`, a lost
override file). `all` cycles through them, example by example. The default, mixed, has a
little of each; plain has none (the generator as it was before issue 7).

Every focus also draws where batches run (each generate stage's `concurrency` and `executor`,
from a generator of its own). With `--scheduler ADDRESS` (a Dask scheduler, e.g. the one
`.ci/with-dask-cluster` starts: `--scheduler $DD_BUILD_TEST_SCHEDULER`), a `--dask` share of
the builds (default 0.5) runs there, on the same long-lived workers throughout; the other
builds, and every from-scratch build, run locally. A seed draws the same edits either way.

After every `dd-build` of every example it checks:
  stale     a stage in the build's closure whose selected output differs from a from-scratch
            build of the current project files;
  wasteful  a stage whose code was called although nothing it depends on changed since its
            last completed build, its outputs were intact and it was not forced (upstreams
            that reran with byte-identical output count as unchanged: early cutoff); a held
            stage's code called; a plan whose first step for a stage (`"step"` in --json) is
            earlier than the step model expects, or that runs batches for a later step
            (a later step than expected is stale);
  errors    a build, a from-scratch build, `clean` or `export` that failed (beyond a run
            stage whose command writes nothing), or a refusal that names no glob/path;
  harness   the fuzzer itself raised (a bug of tests/fuzz_support.py, not of dd-build).

Run by hand, e.g.:
  python benchmarks/fuzz_correctness.py --examples 30
  python benchmarks/fuzz_correctness.py --examples 1000 --seed 0 --jobs 2
  python benchmarks/fuzz_correctness.py --examples 5 --focus types
  python benchmarks/fuzz_correctness.py --examples 200 --focus steps --jobs 2
  .ci/with-dask-cluster sh -c 'python benchmarks/fuzz_correctness.py --examples 20 \
      --focus helpers --scheduler "$DD_BUILD_TEST_SCHEDULER" --dask 0.7'
Exit status 1 when any violation was found; the first --show reports are printed in full.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fuzz_support import (  # noqa: E402
    FOCUS,
    ReferenceBuilds,
    SequenceResult,
    Violation,
    run_seed,
)

_REFS: ReferenceBuilds | None = None
_WORKDIR: Path | None = None


def _init(workdir: str) -> None:
    global _REFS, _WORKDIR
    _WORKDIR = Path(tempfile.mkdtemp(prefix="worker-", dir=workdir))
    _REFS = ReferenceBuilds(_WORKDIR / "scratch")


def _one(seed: int, rounds: int, focus: str, scheduler: str | None = None, dask: float = 0.0
         ) -> tuple[SequenceResult, int, int]:
    """One example in a fresh project folder: its result and the from-scratch cache counters."""
    assert _REFS is not None and _WORKDIR is not None
    root = _WORKDIR / f"seed-{seed}"
    builds, hits = _REFS.builds, _REFS.hits
    try:
        result = run_seed(seed, root, _REFS, rounds=rounds, focus=focus, scheduler=scheduler,
                          dask=dask)
    except Exception:  # a bug of the harness itself: report it, keep going
        import traceback

        result = SequenceResult("(the harness raised)", [], [Violation(
            "harness", 0, None, traceback.format_exc())], 0, 0, "", seed=seed, focus=focus)
    if not result.violations:
        shutil.rmtree(root, ignore_errors=True)
    return result, _REFS.builds - builds, _REFS.hits - hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=30, help="random sequences to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first example")
    parser.add_argument("--rounds", type=int, default=5, help="builds per example (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="examples run side by side")
    parser.add_argument("--workdir", help="where projects go (default: a temp folder)")
    parser.add_argument("--show", type=int, default=3, help="full reports to print (default 3)")
    parser.add_argument("--focus", default="mixed", choices=[*FOCUS, "all"],
                        help="the hard-edge class to raise (default: mixed)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a Dask scheduler: a --dask share of the builds runs there")
    parser.add_argument("--dask", type=float, default=0.5, metavar="SHARE",
                        help="with --scheduler, the share of builds on it (default 0.5)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dd-fuzz-correctness-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed + i for i in range(args.examples)]
    cycle = [f for f in FOCUS if f not in ("mixed", "plain")]
    focuses = [cycle[i % len(cycle)] if args.focus == "all" else args.focus
               for i in range(args.examples)]
    print(f"{args.examples} examples, seeds {seeds[0]}..{seeds[-1]}, focus {args.focus}, "
          f"{args.rounds} builds each, {args.jobs} job(s), in {workdir}"
          + (f", {args.dask:.0%} of builds on {args.scheduler}" if args.scheduler else ""),
          flush=True)
    started = time.monotonic()
    totals = dict(builds=0, edits=0, stale=0, wasteful=0, error=0, harness=0, failing=0,
                  scratch=0, hits=0)
    seen: Counter[str] = Counter()
    failures: list[SequenceResult] = []
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(str(workdir),)) as pool:
        futures = [pool.submit(_one, seed, args.rounds, focus, args.scheduler, args.dask)
                   for seed, focus in zip(seeds, focuses, strict=True)]
        for done, future in enumerate(futures, 1):
            result, scratch, hits = future.result()
            totals["builds"] += result.builds
            totals["edits"] += result.edits
            totals["scratch"] += scratch
            totals["hits"] += hits
            seen.update(result.seen)
            for v in result.violations:
                totals[v.kind] += 1
            if result.violations:
                totals["failing"] += 1
                failures.append(result)
            verdict = "ok" if not result.violations else \
                "VIOLATED: " + "; ".join(str(v) for v in result.violations)[:300]
            where = f" ({result.focus})" if args.focus == "all" else ""
            print(f"[{done:>{len(str(args.examples))}}/{args.examples}] seed {result.seed}{where}: "
                  f"{result.stages} stages, {result.builds} builds, {result.edits} edits, "
                  f"{result.seconds:.1f}s: {verdict}", flush=True)
    wall = time.monotonic() - started

    for result in failures[:args.show]:
        print("\n" + "=" * 78 + "\n" + result.report(), flush=True)
    if failures:
        print(f"\nthe failing projects are kept under {workdir}")
    elif not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"examples:                  {args.examples}")
    print(f"builds:                    {totals['builds']}")
    print(f"edits:                     {totals['edits']}")
    print(f"stale violations:          {totals['stale']}")
    print(f"wasteful violations:       {totals['wasteful']}")
    print(f"errors:                    {totals['error']}")
    print(f"harness errors:            {totals['harness']}")
    print(f"examples with violations:  {totals['failing']}")
    print(f"from-scratch builds:       {totals['scratch']} (cache hits {totals['hits']})")
    print("exercised:                 " + ", ".join(
        f"{n} {what}" for what, n in sorted(seen.items()) if not what.startswith("edit ")))
    print("edits by kind:             " + ", ".join(
        f"{n} {what[5:]}" for what, n in sorted(seen.items()) if what.startswith("edit ")))
    print(f"wall time:                 {wall:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
