"""Argument parsing, the error handler, exit codes and the commands.

With console.py (where text goes) and reporter.py (a build's progress as text), the printing
layer: the only modules that print, and nothing imports them but each other."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .console import Console, internal_message
from .errors import EXIT_INTERNAL, BuildError, Interrupted, UsageError
from .model import TOOL_WORDS as COMMANDS  # _COMMANDS and _parsers() have one entry each

if TYPE_CHECKING:
    from .model import Workflow
    from .report import BuildReport, InternalFailure

_INTERRUPTED = "interrupted; run dd-build again to resume"
_EPILOG = """commands (dd-build COMMAND --help for each):
  build      build the targets (the default command)
  status     each stage: up to date or not, and why
  dag        print the stage graph
  show       print the first rows of a stage's output
  export     write a stage's output to .parquet, .jsonl or .csv
  override   make a reviewed parquet file a stage's output
  clean      remove stage artifacts
  schema     print the JSON Schema of the Workflowfile"""
_VALUE_OPTIONS = {"-f", "--file", "-C", "--directory", "--resume", "--rerun-from", "--force",
                  "-n", "--rows", "--format"}


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-f", "--file", default="Workflowfile", help="the Workflowfile (default: ./Workflowfile)")
    p.add_argument("-C", "--directory", help="run as if started in this folder")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress of every batch")
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


def _parsers() -> dict[str, argparse.ArgumentParser]:
    common = _common()
    make = lambda cmd, desc: _Parser(  # noqa: E731
        prog=f"dd-build {cmd}" if cmd != "build" else "dd-build", description=desc, parents=[common],
        epilog=_EPILOG if cmd == "build" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    build = make("build", "Build the targets (default: every stage) and what they need.")
    build.add_argument("targets", nargs="*", metavar="TARGET")
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
    status = make("status", "Each stage: up to date or not, and why; rows; last run.")
    dag = make("dag", "Print the stage graph.")
    dag.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    show = make("show", "Print the first rows of a stage's selected output.")
    show.add_argument("stage")
    show.add_argument("-n", "--rows", type=_non_negative, default=10)
    export = make("export", "Write a stage's selected output to a .parquet, .jsonl or .csv file.")
    export.add_argument("stage")
    export.add_argument("path")
    override = make("override", "Make a reviewed parquet file a stage's selected output, or "
                    "let a review go with --release.")
    override.add_argument("stage")
    override.add_argument("path", nargs="?")
    override.add_argument("--release", action="store_true",
                          help="drop STAGE's override: the next build rebuilds it if it changed")
    clean = make("clean", "Remove stage artifacts (all, or the named stages').")
    clean.add_argument("stages", nargs="*", metavar="STAGE")
    clean.add_argument("--orphans", action="store_true",
                       help="remove only folders of stages no longer in the Workflowfile")
    schema = make("schema", "Print the JSON Schema of the Workflowfile.")
    return {"build": build, "status": status, "dag": dag, "show": show, "export": export,
            "override": override, "clean": clean, "schema": schema}


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
        args = _parsers()[command].parse_args(rest)
        out = Console(args)
        if args.directory:
            _chdir(args.directory)
        return _COMMANDS[command](args, out)
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
    kept = ""
    if at.batches_total is not None:
        fields.update(batches_kept=at.batches_kept, batches_total=at.batches_total)
        kept = f" ({at.batches_kept} of {at.batches_total} " \
               f"{'batch' if at.batches_total == 1 else 'batches'} kept)"
    return out.fail(f"interrupted in '{at.stage}'{kept}; run dd-build again to resume",
                    exit_code, fields)


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


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _load(args: argparse.Namespace, out: Console) -> Workflow:
    from .workflowfile import load_workflow

    path = Path(args.file)
    if path.is_dir():
        raise UsageError(f"the Workflowfile {path} is a folder, not a file",
                         hint="name the file inside it with -f FILE, or run there with -C DIR")
    if not path.is_file():
        raise UsageError(f"no Workflowfile at {path}",
                         hint="run in the project folder, or name the file with -f FILE")
    workflow = load_workflow(path, display=args.file)
    out.workflow = workflow.name
    return workflow


def cmd_build(args: argparse.Namespace, out: Console) -> int:
    from .api import build_workflow
    from .execute import BuildConfig
    from .reporter import TextReporter

    workflow = _load(args, out)
    config = BuildConfig(tuple(args.targets), args.resume, tuple(args.force),
                         tuple(args.rerun_from), args.dry_run)
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
            doc["error"] = {"message": f"stages failed: {', '.join(failed)}", "exit_code": 1}
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
    from .api import workflow_status
    from .explain import status_lines

    status = workflow_status(_load(args, out))
    if args.json:
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


def _selected_table(workflow: Workflow, name: str) -> Any:
    from .artifacts import completed_record
    from .datasets import read_stage_table
    from .graph import build_graph, check_stage_names

    check_stage_names(build_graph(workflow), [name], "the command")
    record = completed_record(workflow, name)  # a clear error when it has none (or was skipped)
    table = read_stage_table(workflow, record)
    if table is None:
        raise UsageError("no tabular output (its first output is not a "
                         ".parquet, .csv or .jsonl file or a folder of .parquet files)",
                         stage=name)
    return table


def cmd_show(args: argparse.Namespace, out: Console) -> int:
    from .preview import format_rows, preview_rows

    table = _selected_table(_load(args, out), args.stage)
    if args.json:
        out.document(preview_rows(table, args.rows))
        return 0
    out.result(format_rows(table, args.rows))
    out.result(f"({min(args.rows, table.num_rows)} of {table.num_rows} rows)")
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
    table = _selected_table(workflow, args.stage)
    write_export(table, path)
    out.text(f"wrote {table.num_rows} rows of '{args.stage}' to {args.path}")
    if args.json:
        out.document({"ok": True, "stage": args.stage, "path": args.path, "rows": table.num_rows})
    return 0


def cmd_override(args: argparse.Namespace, out: Console) -> int:
    from .artifacts import override_output, release_override
    from .graph import build_graph, check_stage_names
    from .lock import build_lock

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
    if args.release:
        out.text(f"'{args.stage}': the override is released; the next build rebuilds it if "
                 "it changed, and reruns the stages after it")
        if args.json:
            out.document({"ok": True, "stage": args.stage, "released": True})
        return 0
    rows = record.output.rows if record.output else 0
    out.text(f"'{args.stage}' now outputs {args.path} ({rows} rows); the stages after it "
             "rerun on the next build, and the override is held until `dd-build override "
             f"--release {args.stage}`")
    if args.json:
        out.document({"ok": True, "stage": args.stage, "path": args.path, "rows": rows})
    return 0


def cmd_clean(args: argparse.Namespace, out: Console) -> int:
    from .artifacts import orphan_stages, remove_stage_artifacts
    from .graph import build_graph, check_stage_names
    from .lock import build_lock

    workflow = _load(args, out)
    orphans = [name for name in args.stages if name not in workflow.stages
               and name in orphan_stages(workflow)]
    if orphans:
        raise UsageError(f"clean names no stage '{orphans[0]}': it is no longer in the "
                         "Workflowfile, but its folder of records is still there",
                         hint="`dd-build clean --orphans` removes the folders of every stage "
                              "no longer in the Workflowfile")
    check_stage_names(build_graph(workflow), args.stages, "clean")
    if args.orphans and args.stages:
        raise UsageError("clean: name stages or use --orphans, not both")
    removed: list[str] = []
    if not workflow.artifacts_root.is_dir():
        out.text("nothing to clean")
    else:
        with build_lock(workflow.artifacts_root):
            names = orphan_stages(workflow) if args.orphans else \
                (args.stages or list(workflow.stages) + orphan_stages(workflow))
            for folder in remove_stage_artifacts(workflow, names):
                removed.append(os.path.relpath(folder))
                out.text(f"removed {removed[-1]}")
    if args.json:
        out.document({"ok": True, "workflow": workflow.name, "removed": removed})
    return 0


def cmd_schema(args: argparse.Namespace, out: Console) -> int:
    from .schema import workflow_json_schema

    out.result(json.dumps(workflow_json_schema(), indent=2))
    return 0


_COMMANDS = {"build": cmd_build, "status": cmd_status, "dag": cmd_dag, "show": cmd_show,
             "export": cmd_export, "override": cmd_override, "clean": cmd_clean,
             "schema": cmd_schema}
