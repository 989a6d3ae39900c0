"""Argument parsing, the error handler, exit codes and the commands.

With console.py (where text goes) and reporter.py (a build's progress as text), the printing
layer: the only modules that print, and nothing imports them but each other."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .console import Console, internal_message
from .errors import EXIT_INTERNAL, BuildError, Interrupted, UsageError
from .model import TOOL_WORDS as COMMANDS  # _COMMANDS has one entry each
from .wording import counted, noun

if TYPE_CHECKING:
    from .model import Workflow
    from .report import BuildReport, InternalFailure, Interruption

_INTERRUPTED = "interrupted; run dd-build again to resume"
_USAGE = "dd-build [OPTIONS] [TARGET ...]\n       dd-build COMMAND [OPTIONS] ..."
_TARGETS = """TARGET is a stage name: dd-build builds it and every stage it needs (its seed and input
stages, and theirs). With no TARGET, every stage. Only what is out of date runs; `dd-build
status` says what is, and why."""
_FIND = """The Workflowfile is ./Workflowfile, or the nearest one in a folder above (as git finds
.git): dd-build then runs in that folder, as with -C, and a path you give (export, override)
still means a path from where you are."""
_VALUE_OPTIONS = {"-f", "--file", "-C", "--directory", "--resume", "--rerun-from", "--force",
                  "-n", "--rows", "--format", "--executor", "--scheduler"}
_PATH_ARGS = ("path",)  # the arguments that name a file from the user's working folder
_JOBS_CAP = 32  # execute.MAX_JOBS (not imported: start-up)


def _options(file: bool) -> argparse.ArgumentParser:
    """The options every command takes (-f too when it reads a Workflowfile)."""
    p = argparse.ArgumentParser(add_help=False)
    if file:
        p.add_argument("-f", "--file", metavar="FILE",
                       help="the Workflowfile (default: ./Workflowfile, or the nearest one in "
                            "a folder above)")
    p.add_argument("-C", "--directory", metavar="DIR", help="run as if started in DIR")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress of every batch, a run stage's command and its output as it "
                        "comes, and the traceback of a stage that raised")
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    return p


class _ShowVersion(Exception):  # noqa: N818 - a request, not an error
    """`--version` was given: main prints the version (a document with --json) and exits 0."""


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        raise _ShowVersion


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise a UsageError (exit 2, and a `--json` document) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"`{self.prog} --help` lists the options")


@dataclass(frozen=True)
class _Command:
    """One subcommand: its line in `dd-build --help`, its arguments and what runs it."""

    summary: str
    run: Callable[[argparse.Namespace, Console], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str | None = None  # `COMMAND --help`'s text, when more than the summary
    loads: bool = True  # reads a Workflowfile (so -f applies)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """A parser per command of _COMMANDS, built from its entry."""
    return {name: _parser(name) for name in _COMMANDS}


def _parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command (each command line builds only its own: start-up)."""
    command = _COMMANDS[name]
    parser = _Parser(
        prog="dd-build" if name == "build" else f"dd-build {name}",
        usage=_USAGE if name == "build" else None,
        description=_main_description() if name == "build" else
        command.description or command.summary[0].upper() + command.summary[1:] + ".",
        parents=[_options(file=command.loads)],
        epilog=_FIND if command.loads else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    command.arguments(parser)
    return parser


def _main_description() -> str:
    width = max(len(name) for name in _COMMANDS) + 2
    lines = [f"  {name:<{width}}{command.summary}" for name, command in _COMMANDS.items()]
    return "\n".join([
        "Build the stages of a Workflowfile, or run COMMAND.", "", _TARGETS, "",
        "commands (`dd-build COMMAND --help` or `dd-build help COMMAND` for each):", *lines])


def _build_arguments(build: argparse.ArgumentParser) -> None:
    build.add_argument("targets", nargs="*", metavar="TARGET",
                       help="a stage name: build it and what it needs (default: every stage)")
    build.add_argument("-n", "--dry-run", action="store_true", help="plan only; change nothing")
    build.add_argument("--explain", action="store_true", help="print every stage's decision and why")
    build.add_argument("--resume", choices=("if-possible", "never", "always"), default="if-possible",
                       help="if-possible (default): resume what can resume; never: run every "
                            "stage fresh; always: refuse (exit 3) if a stage would start fresh")
    build.add_argument("--rerun-from", action="append", default=[], metavar="STAGE",
                       help="run STAGE and everything after it fresh")
    build.add_argument("-k", "--keep-going", action="store_true",
                       help="after a stage fails, still build the stages that do not need it")
    build.add_argument("--force", action="append", default=[], metavar="STAGE",
                       help="run STAGE fresh (repeatable)")
    build.add_argument("-j", "--jobs", type=_jobs, nargs="?", const=_JOBS_CAP, metavar="N",
                       help=f"run up to N stages at once, each once its input stages are done "
                            f"(default: the Workflowfile's `jobs:`, else 1; -j alone or above "
                            f"{_JOBS_CAP}: {_JOBS_CAP})")
    build.add_argument("--executor", choices=("local", "dask"), default=None,
                       help="dask: run generate and transform stages on a Dask cluster "
                            "(needs dd-build[dask]); local: on this machine, whatever the "
                            "Workflowfile's `executor:` says (default: the Workflowfile's, "
                            "else local)")
    build.add_argument("--scheduler", metavar="ADDRESS", type=_scheduler,
                       help="the Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --executor "
                            "dask; default: $DD_BUILD_SCHEDULER, else the Workflowfile's, else "
                            "a LocalCluster for the build)")


def _dag_arguments(dag: argparse.ArgumentParser) -> None:
    dag.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")


def _show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("stage", metavar="STAGE")
    show.add_argument("-n", "--rows", type=_non_negative, default=10,
                      help="how many rows (default: 10)")


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("stage", metavar="STAGE")
    export.add_argument("path", metavar="PATH", help="a .parquet, .jsonl or .csv file to write")


def _override_arguments(override: argparse.ArgumentParser) -> None:
    override.add_argument("stage", metavar="STAGE")
    override.add_argument("path", nargs="?", metavar="PATH", help="the reviewed parquet file")
    override.add_argument("--release", action="store_true",
                          help="drop STAGE's override: the next build rebuilds it if it changed")
    override.add_argument("--restore", action="store_true",
                          help="set STAGE's last review again (kept in the build cache)")


def _clean_arguments(clean: argparse.ArgumentParser) -> None:
    clean.add_argument("stages", nargs="*", metavar="STAGE",
                       help="remove these stages' artifacts (no STAGE: every stage's, asked "
                            "for on a terminal; elsewhere say --all)")
    clean.add_argument("--all", action="store_true",
                       help="remove the artifacts of every stage (and of stages no longer in the "
                        "Workflowfile), without asking")
    clean.add_argument("--orphans", action="store_true",
                       help="remove only folders of stages no longer in the Workflowfile")
    clean.add_argument("-n", "--dry-run", action="store_true",
                       help="list what would be removed; remove nothing")


def _init_arguments(init: argparse.ArgumentParser) -> None:
    init.add_argument("folder", nargs="?", default=".", metavar="DIR",
                      help="where to write the project (default: here; made if missing)")


def _help_arguments(help_: argparse.ArgumentParser) -> None:
    help_.add_argument("topic", nargs="?", metavar="COMMAND",
                       help="the command to print the options of")


def split_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """The subcommand (default `build`) and the rest of the arguments."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--":
            break
        if arg.startswith("-"):
            skip = arg in _VALUE_OPTIONS
            continue
        if arg in COMMANDS:
            return arg, [*argv[:i], *argv[i + 1:]]
        break
    return "build", list(argv)


def main(argv: Sequence[str] | None = None) -> int:
    command, rest = split_command(list(sys.argv[1:] if argv is None else argv))
    out = Console.from_argv(rest)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # not under nohup
        # The terminal closed: a run stage's command (in a session of its own, so the hangup
        # does not reach it) is ended with dd-build, as with SIGTERM.
        signal.signal(signal.SIGHUP, _raise_interrupted)
    try:
        args = _parse_build(rest) if command == "build" else _parser(command).parse_args(rest)
        out = Console(args)
        if args.directory:
            _chdir(args.directory)
        return _COMMANDS[command].run(args, out)
    except _ShowVersion:  # as soon as it is parsed, whatever else the command line says
        if out.json:
            out.document({"ok": True, "version": __version__})
        else:
            out.result(f"dd-build {__version__}")
        return 0
    except BuildError as exc:
        return out.fail(exc.render(), exc.exit_code, exc.fields())
    except KeyboardInterrupt:
        return _interrupted(out, 130)
    except Interrupted as exc:
        return _interrupted(out, 128 + exc.signum)
    except OSError as exc:
        return out.fail(f"dd-build: {exc}", 2)
    except Exception as exc:  # a bug in dd-build: said so, with its traceback kept (exit 70)
        return out.internal_error(exc)


def _interrupted(out: Console, exit_code: int) -> int:
    """`interrupted in 'answers' (12 of 30 batches kept); run dd-build again to resume`: the
    stage that was running, and the batches its record keeps (--json: `stage`, `batches_kept`,
    `batches_total` in the error)."""
    at = out.report.interrupted if out.report is not None else None
    if at is None:  # between stages, or before the build began
        return out.fail(_INTERRUPTED, exit_code)
    fields: dict[str, Any] = {"stage": at.stage}
    if at.batches_total is not None:
        fields.update(batches_kept=at.batches_kept, batches_total=at.batches_total)
    kept = _kept(at)
    too = out.report.interrupted_too if out.report is not None else []
    if too:
        fields["also"] = [i.stage for i in too]
    where = "".join(f" and '{i.stage}'{_kept(i)}" for i in too)
    again = "to resume" if kept or any(_kept(i) for i in too) else "to rerun it"
    return out.fail(f"interrupted in '{at.stage}'{kept}{where}; run dd-build again {again}",
                    exit_code, fields)


def _kept(at: Interruption) -> str:
    """` (12 of 30 batches kept)` for a batched stage, else nothing."""
    if at.batches_total is None:
        return ""
    return f" ({at.batches_kept} of {at.batches_total} {noun(at.batches_total, 'batch')} kept)"


def _chdir(folder: str) -> None:
    try:
        os.chdir(folder)
    except OSError as exc:
        what = "no such folder" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise UsageError(f"-C {folder}: {what}",
                         hint="name the project folder (the one holding the Workflowfile)") from exc


def _non_negative(text: str) -> int:
    value = int(text)  # argparse reports a ValueError as an invalid value
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _parse_build(argv: list[str]) -> argparse.Namespace:
    """The build's arguments, options and targets in any order, as in make (`dd-build a -k b`:
    argparse's parse_args takes the targets once, and b would be "unrecognized"). What follows
    `--` is targets, added after: parse_intermixed_args would parse options there (Python
    3.11)."""
    head, tail = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    args = _parser("build").parse_intermixed_args(_bare_jobs(head))
    args.targets = [*args.targets, *tail]
    return args


def _bare_jobs(argv: list[str]) -> list[str]:
    """`-j TARGET` is `-j` alone before a target, as in make: a `-j`/`--jobs` followed by a
    word that is not a number gets the cap as its N (argparse would take the word as N)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":
            return out + argv[i + 1:]
        if arg in ("-j", "--jobs") and i + 1 < len(argv) and not _numeric(argv[i + 1]) \
                and not argv[i + 1].startswith("-"):
            out.append(str(_JOBS_CAP))
    return out


def _numeric(text: str) -> bool:
    """Written as a number (`4`, `1.5`): N, even a wrong one; a stage may be named `nan`."""
    import re

    return re.fullmatch(r"[+-]?\d+(\.\d*)?", text) is not None


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}"
                                         ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _scheduler(text: str) -> str:
    from .model import scheduler_problem

    problem = scheduler_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{problem}: give tcp://HOST:PORT or HOST:PORT")
    return text


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _load(args: argparse.Namespace, out: Console, store: bool = True) -> Workflow:
    return _load_at(args, out, *_locate(args, out), store=store)


def _locate(args: argparse.Namespace, out: Console) -> tuple[Path, str]:
    """The Workflowfile's path and the name messages give it (in its folder, when found
    above)."""
    from .locate import find_workflowfile, workflowfile_at

    if args.file is not None:  # named: from the working folder, no search
        return workflowfile_at(Path(args.file)), args.file
    path = find_workflowfile(Path.cwd())
    if path.parent != Path.cwd():
        _enter_project(args, path.parent, out)
    return path, path.name


def _load_at(args: argparse.Namespace, out: Console, path: Path, display: str,
             store: bool = True) -> Workflow:
    from . import compiled

    # a dry run writes nothing, not even the compiled workflow
    workflow = compiled.load(path, display, store=store and not getattr(args, "dry_run", False))
    out.workflow = workflow.name
    return workflow


def _stamped(command: str, args: argparse.Namespace, out: Console,
             run: Callable[[Workflow, Any], int]) -> int:
    """Run a command that plans every stage (a build, `status`): from the null-build stamp
    when it holds (nullstamp.py), else in full, storing the stamp when it qualifies. A dry run
    neither reads nor writes one."""
    from . import nullstamp

    path, display = _locate(args, out)
    if getattr(args, "dry_run", False):
        return run(_load_at(args, out, path, display), None)
    key = nullstamp.invocation(command, args, out)
    code = nullstamp.replay(path, display, key, out, lock=command == "build")
    if code is not None:
        return code
    from . import execute

    recorder = nullstamp.Recorder(path, display, key, out, getattr(args, "executor", None),
                                  getattr(args, "scheduler", None))
    execute.after_build = recorder.seen
    code = None
    try:
        code = run(_load_at(args, out, path, display), recorder)
    finally:
        execute.after_build = None
        recorder.finish(code)
    return code


def _enter_project(args: argparse.Namespace, folder: Path, out: Console) -> None:
    """Run in `folder` (the nearest above with a Workflowfile), as with -C; a path given on
    the command line keeps meaning the file from where the user is."""
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(args, name, os.path.relpath(os.path.abspath(value), folder))
    os.chdir(folder)
    out.progress(f"dd-build: in {folder} (the nearest folder with a Workflowfile)")


def cmd_build(args: argparse.Namespace, out: Console) -> int:
    return _stamped("build", args, out, lambda workflow, _: _build(args, out, workflow))


def _build(args: argparse.Namespace, out: Console, workflow: Workflow) -> int:
    from .api import build_workflow
    from .execute import BuildConfig
    from .reporter import TextReporter

    config = BuildConfig(tuple(args.targets), args.resume, tuple(args.force),
                         tuple(args.rerun_from), args.dry_run, args.jobs, args.executor,
                         args.scheduler)
    reporter = TextReporter(out, args.explain or args.dry_run)

    def planned(report: BuildReport) -> None:  # the stages, should the build end early
        out.report = report

    report = build_workflow(workflow, config, keep_going=args.keep_going, reporter=reporter,
                            on_plan=planned)
    if report.internal is not None:
        return _internal_in_stage(report.internal, out)
    if args.json:
        doc = report.to_json()
        if not report.ok:
            failed = [s.stage for s in report.stages if s.result == "failed"]
            doc["error"] = {"message": f"{noun(len(failed), 'stage')} failed: {', '.join(failed)}",
                            "exit_code": 1}
        out.document(doc)
    return 0 if report.ok else 1


def _internal_in_stage(failure: InternalFailure, out: Console) -> int:
    """The build ended at a bug in dd-build: the stage is recorded `failed`; say so (exit 70)."""
    if out.verbose:
        out.error(failure.traceback.rstrip())
    fields = {"stage": failure.stage, **({"log": failure.log} if failure.log else {})}
    return out.fail(internal_message(failure.error, failure.stage, failure.log),
                    EXIT_INTERNAL, fields)


def cmd_status(args: argparse.Namespace, out: Console) -> int:
    return _stamped("status", args, out, lambda workflow, recorder: _status(out, workflow,
                                                                            recorder))


def _status(out: Console, workflow: Workflow, recorder: Any) -> int:
    from .api import workflow_status
    from .explain import status_lines

    status = workflow_status(workflow)
    if recorder is not None:
        recorder.seen(status.prepared, None)
    if out.json:
        out.document(status.to_json())
    for line in status_lines(status.prepared):
        out.text(line)
    return 0


def cmd_dag(args: argparse.Namespace, out: Console) -> int:
    from .explain import dag_dot, dag_mermaid, dag_text
    from .graph import build_graph, topological_order

    workflow = _load(args, out)
    graph = build_graph(workflow)
    order = topological_order(graph)
    if args.json:
        out.document({"workflow": workflow.name, "ok": True, "stages": [
            {"stage": n, "kind": workflow.stages[n].kind,
             "inputs": sorted(graph.predecessors(n), key=order.index)} for n in order]})
        return 0
    render = {"text": dag_text, "mermaid": dag_mermaid, "dot": dag_dot}[args.format]
    out.result(render(graph, order))
    return 0


def _selected_table(workflow: Workflow, name: str, command: str) -> Any:
    from .api import selected_table

    return selected_table(workflow, name, command)


def cmd_show(args: argparse.Namespace, out: Console) -> int:
    from .preview import format_rows, preview_rows

    workflow = _load(args, out)
    table = _selected_table(workflow, args.stage, "show")
    fresh = _freshness(workflow, args.stage, out)
    if args.json:
        out.document({"ok": True, "stage": args.stage, **fresh, "rows": table.num_rows,
                      "data": preview_rows(table, args.rows)})
        return 0
    out.result(format_rows(table, args.rows))
    out.result(f"({min(args.rows, table.num_rows)} of {counted(table.num_rows, 'row')})")
    return 0


def cmd_export(args: argparse.Namespace, out: Console) -> int:
    from .exportformats import write_export
    from .model import DATA_SUFFIXES

    workflow = _load(args, out)
    path = Path(args.path)
    if path.suffix.lower() not in DATA_SUFFIXES:  # before reading any data
        raise UsageError(f"cannot export to {args.path}: unsupported format "
                         f"'{path.suffix or '(no extension)'}'",
                         hint=f"end the path with one of {', '.join(DATA_SUFFIXES)}")
    if not path.parent.is_dir():  # like cp: a misspelt folder is an error, not a new folder
        raise UsageError(f"cannot export to {args.path}: no folder {path.parent}",
                         hint=f"create it first (mkdir -p {path.parent}) or fix the path")
    table = _selected_table(workflow, args.stage, "export")
    fresh = _freshness(workflow, args.stage, out)
    write_export(table, path)
    out.text(f"wrote {counted(table.num_rows, 'row')} of '{args.stage}' to {args.path}")
    if args.json:
        out.document({"ok": True, "stage": args.stage, "path": args.path, "rows": table.num_rows,
                      **fresh})
    return 0


def _freshness(workflow: Workflow, stage: str, out: Console) -> dict[str, Any]:
    """Whether the stage's last built output is what a build would give now (planning only the
    stage's closure), for the JSON document; a stale one is said on stderr."""
    from .execute import BuildConfig, prepare
    from .explain import staleness

    decisions = prepare(workflow, BuildConfig(targets=(stage,), dry_run=True)).decisions
    decision = next(d for d in decisions if d.stage == stage)
    why = staleness(decision, decisions)
    if why is not None:
        out.progress(f"warning: '{stage}' is out of date ({why}); this is its last built output")
    reasons = [r.to_json() for r in decision.reasons] if why is not None else []
    return {"up_to_date": why is None, "reasons": reasons}


def cmd_override(args: argparse.Namespace, out: Console) -> int:
    from .artifacts import override_output, release_override
    from .graph import build_graph, check_stage_names
    from .lock import build_lock

    if args.restore:
        return _override_restore(args, out)
    if args.release == (args.path is not None):
        raise UsageError("override: name the reviewed parquet file, or --release, not both"
                         if args.release else "override: name the reviewed parquet file",
                         hint="dd-build override STAGE PATH, or dd-build override --release STAGE")
    workflow = _load(args, out)
    check_stage_names(build_graph(workflow), [args.stage], "override")
    with build_lock(workflow.artifacts_root):
        if args.release:
            release_override(workflow, args.stage)
        else:
            record = override_output(workflow, args.stage, Path(args.path))
            _keep_review(workflow, record, args.path, out)
    if args.release:
        out.text(f"'{args.stage}': the override is released; the next build rebuilds it if "
                 "it changed, and reruns the stages after it")
        if args.json:
            out.document({"ok": True, "stage": args.stage, "released": True})
        return 0
    rows = record.output.rows if record.output else 0
    out.text(f"'{args.stage}' now outputs {args.path} ({counted(rows or 0, 'row')}); the stages after it "
             "rerun on the next build, and the override is held until `dd-build override "
             f"--release {args.stage}`")
    if args.json:
        out.document({"ok": True, "stage": args.stage, "path": args.path, "rows": rows})
    return 0


def _keep_review(workflow: Workflow, record: Any, source: str, out: Console) -> None:
    """The review goes into the build cache too (`override --restore` brings it back)."""
    from .cache import CacheDamaged
    from .cachestage import keep_override

    try:
        keep_override(workflow, record, source)
    except (OSError, CacheDamaged) as exc:
        out.progress(f"note: the review is not kept in the build cache: {exc}")


def _override_restore(args: argparse.Namespace, out: Console) -> int:
    from .cachestage import restore_override
    from .graph import build_graph, check_stage_names
    from .lock import build_lock

    if args.release or args.path is not None:
        raise UsageError("override --restore takes a stage name only",
                         hint="dd-build override --restore STAGE")
    workflow = _load(args, out)
    check_stage_names(build_graph(workflow), [args.stage], "override")
    with build_lock(workflow.artifacts_root):
        record, kept = restore_override(workflow, args.stage)
    rows = record.output.rows if record.output else 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(kept["built_at"])))
    out.text(f"'{args.stage}' outputs its review of {when} again ({kept['source']}, "
             f"{counted(rows or 0, 'row')}); the stages after it rerun on the next build")
    if args.json:
        out.document({"ok": True, "stage": args.stage, "restored": True,
                      "source": kept["source"], "set_at": kept["built_at"], "rows": rows})
    return 0


def cmd_cache(args: argparse.Namespace, out: Console) -> int:
    from .cachecli import cmd_cache as run

    return run(args, out, _load(args, out))


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    from .cachecli import cache_arguments

    cache_arguments(parser)


def cmd_clean(args: argparse.Namespace, out: Console) -> int:
    from .lock import build_lock

    workflow = _load(args, out, store=False)  # (no compiled workflow to list, or remove)
    names = _clean_names(args, workflow)
    every = not (args.stages or args.orphans)  # --all, or every stage's once confirmed
    extras = _clean_extras(workflow) if every else []
    folders = [workflow.stage_dir(n) for n in names if workflow.stage_dir(n).is_dir()] + extras
    shown = [os.path.relpath(f) for f in folders]
    if args.dry_run or not folders:
        out.text("\n".join(f"would remove {f}" for f in shown) if folders and args.dry_run
                 else "nothing to clean")
        if args.json:
            out.document({"ok": True, "workflow": workflow.name, "dry_run": args.dry_run,
                          "removed": [], "would_remove": shown if args.dry_run else []})
        return 0
    if not (args.stages or args.all or args.orphans):
        try:
            yes = _confirmed(shown, out)
        except KeyboardInterrupt:  # Ctrl-C at the question
            out.error("\nnothing removed")
            return 130
        if not yes:
            out.text("nothing removed")
            return 0
    from .artifacts import remove_stage_artifacts
    from .fsutil import remove_path

    removed: list[str] = []
    with build_lock(workflow.artifacts_root):
        gone = remove_stage_artifacts(workflow, names)
        for extra in extras:
            remove_path(extra)
            gone.append(extra)
        for folder in gone:
            removed.append(os.path.relpath(folder))
            out.text(f"removed {removed[-1]}")
    if args.json:
        out.document({"ok": True, "workflow": workflow.name, "dry_run": False,
                      "removed": removed, "would_remove": []})
    return 0


def _clean_extras(workflow: Workflow) -> list[Path]:
    """What `clean --all` removes besides stage folders: the last build's summary, the
    planning index, the shared output log and the compiled workflows (with their null-build
    stamps). The lock file stays: clean holds it."""
    from . import compiled
    from .execute import SHARED_OUTPUT, SUMMARY_NAME
    from .planindex import INDEX_NAME

    root = workflow.artifacts_root
    found = [root / name for name in (SUMMARY_NAME, INDEX_NAME, SHARED_OUTPUT)]
    found.append(compiled.cache_folder(workflow.project_dir, workflow.artifacts))
    return [path for path in found if os.path.lexists(path)]


def _clean_names(args: argparse.Namespace, workflow: Workflow) -> list[str]:
    """The stages whose folders `clean` removes; a UsageError for a request it refuses."""
    from .artifacts import orphan_stages
    from .graph import build_graph, check_stage_names

    orphans = [name for name in args.stages if name not in workflow.stages
               and name in orphan_stages(workflow)]
    if orphans:
        raise UsageError(f"clean names no stage '{orphans[0]}': it is no longer in the "
                         "Workflowfile, but its folder of records is still there",
                         hint="`dd-build clean --orphans` removes the folders of every stage "
                              "no longer in the Workflowfile")
    check_stage_names(build_graph(workflow), args.stages, "clean")
    chosen = [what for what, given in (("stage names", args.stages), ("--all", args.all),
                                       ("--orphans", args.orphans)) if given]
    if len(chosen) > 1:
        raise UsageError(f"clean: {' or '.join(chosen)}, not both",
                         hint="stage names remove those stages' artifacts, --all every "
                              "stage's, --orphans those of stages no longer in the Workflowfile")
    if not chosen and not args.dry_run and (args.json or not _stdin_is_a_terminal()):
        raise UsageError("clean without stage names removes every stage's artifacts: "
                         "say so with --all",
                         hint="`dd-build clean --all` removes them all, `dd-build clean STAGE` "
                              "one stage's; `dd-build clean -n` lists what would go")
    if args.orphans:
        return orphan_stages(workflow)
    return args.stages or list(workflow.stages) + orphan_stages(workflow)


def _stdin_is_a_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirmed(shown: list[str], out: Console) -> bool:
    """Asked on the terminal: remove these? Only `y` or `yes` says so."""
    question = f"remove {'this' if len(shown) == 1 else 'these'} {counted(len(shown), 'folder')}? [y/N] "
    if out.stderr is not None:  # shown whatever -q says: a question needs its list
        out.stderr.write("\n".join(f"  {f}" for f in shown) + "\n" + question)
        out.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _touch_arguments(touch: argparse.ArgumentParser) -> None:
    touch.add_argument("stages", nargs="+", metavar="STAGE")
    touch.add_argument("-n", "--dry-run", action="store_true",
                       help="show what would be accepted; change nothing")


def cmd_touch(args: argparse.Namespace, out: Console) -> int:
    from .graph import build_graph, check_stage_names
    from .lock import build_lock
    from .touch import touch

    workflow = _load(args, out)
    check_stage_names(build_graph(workflow), args.stages, "touch")
    if args.dry_run:
        done = touch(workflow, args.stages, dry_run=True)
    else:
        with build_lock(workflow.artifacts_root):
            done = touch(workflow, args.stages, dry_run=False)
    for t in done:
        if not t.accepted:
            out.text(f"{t.stage}: up to date already; nothing to accept")
            continue
        verb = "would accept" if args.dry_run else "accepted"
        out.text(f"{t.stage}: {verb} as built (nothing runs; the stages after it stay up "
                 "to date):")
        for r in t.accepted:
            out.text(f"    - {r.message}")
    if args.json:
        out.document({"ok": True, "workflow": workflow.name, "dry_run": args.dry_run,
                      "stages": [t.to_json() for t in done]})
    return 0


def cmd_schema(args: argparse.Namespace, out: Console) -> int:
    import json

    from .schema import workflow_json_schema

    out.result(json.dumps(workflow_json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace, out: Console) -> int:
    import shlex

    from .initproject import write_project

    folder = Path(args.folder)
    written = write_project(folder)
    for _, line in written:
        out.text(line)
    here = folder.absolute() == Path.cwd()
    next_command = "dd-build" if here else f"dd-build -C {shlex.quote(args.folder)}"
    out.text(f"next: {next_command}   (builds the example stages, offline)")
    if args.json:
        out.document({"ok": True, "folder": str(folder.absolute()), "wrote": [path for path, _ in written],
                      "next": next_command})
    return 0


def cmd_help(args: argparse.Namespace, out: Console) -> int:
    from .errors import suggest

    topic = args.topic or "build"
    if topic not in _COMMANDS:
        raise UsageError(f"help: no command '{topic}'",
                         hint=suggest(topic, _COMMANDS) or "`dd-build --help` lists the commands")
    text = _parser(topic).format_help().rstrip()
    if args.json:
        out.document({"ok": True, "command": topic, "help": text})
    else:
        out.result(text)
    return 0


_COMMANDS = {  # the one table of commands: dispatch, parsers and `dd-build --help`'s list
    "build": _Command("build the targets and what they need (the default command)", cmd_build,
                      _build_arguments),
    "status": _Command("each stage: up to date or not, and why", cmd_status,
                       description="Each stage: up to date or not, and why; rows; last run."),
    "dag": _Command("print the stage graph", cmd_dag, _dag_arguments),
    "show": _Command("print the first rows of a stage's output", cmd_show, _show_arguments,
                     "Print the first rows of a stage's selected output."),
    "export": _Command("write a stage's output to .parquet, .jsonl or .csv", cmd_export,
                       _export_arguments,
                       "Write a stage's selected output to a .parquet, .jsonl or .csv file."),
    "override": _Command("make a reviewed parquet file a stage's output", cmd_override,
                         _override_arguments,
                         "Make a reviewed parquet file a stage's selected output, or let a "
                         "review go with --release."),
    "clean": _Command("remove stage artifacts (every stage's, or the named stages')", cmd_clean,
                      _clean_arguments),
    "cache": _Command("the build cache: `cache status`, `cache gc [--max-size SIZE] "
                      "[--keep-last N]`", cmd_cache, _cache_arguments,
                      "What the build cache holds (status), or remove its least recently used "
                      "entries (gc)."),
    "touch": _Command("accept a stage's changes as built, without running it", cmd_touch,
                      _touch_arguments,
                      "Record the current spec, code and inputs of built stages as what they "
                      "were built from, without running them (their outputs stay; the stages "
                      "after them stay up to date). Refused for a stage that never built, "
                      "whose output is missing or modified, or whose last run did not "
                      "finish."),
    "schema": _Command("print the JSON Schema of the Workflowfile", cmd_schema, loads=False),
    "init": _Command("write a minimal runnable project into a folder", cmd_init,
                     _init_arguments, loads=False),
    "help": _Command("print this help, or a command's (dd-build help COMMAND)", cmd_help,
                     _help_arguments, loads=False),
}
