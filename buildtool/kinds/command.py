"""`run`: a shell command with `{inputs}`, `{outputs}`, `{inputs[0]}`, `{inputs[NAME]}`,
`{inputs.stages}`, `{params.key}` expanded."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import StageFailed
from ..fingerprint import FileState, check_file, digest_strings, expand_glob
from ..fsutil import remove_path, temp_name
from ..globreach import is_glob
from ..lock import held_lock_fds
from ..model import InputRef, Stage, Workflow
from ..placeholders import PLACEHOLDER as _PLACEHOLDER
from ..placeholders import input_named
from ..procgroup import end_process_group
from ..records import Output
from ..wording import counted
from . import Job, input_paths

if TYPE_CHECKING:
    from ..report import StageWarning

_CANCEL_POLL_S = 0.1  # how often a running command looks at Job.cancel


def input_args(job: Job) -> list[tuple[InputRef, list[str]]]:
    """Each input with the project-relative paths it passes to the command."""
    wf = job.workflow
    args: list[tuple[InputRef, list[str]]] = []
    for ref in job.stage.dependencies:
        if ref.kind == "stage":
            paths = input_paths(wf, wf.stages[ref.value], job.upstream[ref.value])
            args.append((ref, [os.path.relpath(p, wf.project_dir) for p in paths]))
        elif is_glob(ref.value):
            args.append((ref, list(expand_glob(wf.project_dir, ref.value))))
        else:  # a file, or a folder as itself (its files are the digests that count)
            args.append((ref, [ref.value]))
    return args


def expand(stage: Stage, inputs: list[tuple[InputRef, list[str]]]) -> str:
    """The command with every placeholder expanded (shell-quoted): the string the shell runs."""
    every = [path for _, paths in inputs for path in paths]

    def joined(values: list[str]) -> str:
        return " ".join(shlex.quote(v) for v in values)

    def sub(match: re.Match[str]) -> str:
        group, index, name, kind, param = match.groups()
        if param is not None:
            return shlex.quote(str(_param(stage.params, param, stage.name)))
        if name is not None:
            ref = input_named(stage, name)
            if ref is None:  # checked at load: not reached
                raise StageFailed(f"{{inputs[{name}]}}: no such input", stage=stage.name,
                                  key="run")
            return joined(next(paths for r, paths in inputs if r == ref))
        if kind is not None:
            return joined([p for r, paths in inputs if (r.kind == "stage") == (kind == "stages")
                           for p in paths])
        values = every if group == "inputs" else list(stage.outputs)
        if index is None:
            return joined(values)
        if int(index) >= len(values):
            raise StageFailed(f"{{{group}[{index}]}}: the stage has only "
                              f"{counted(len(values), group[:-1])}", stage=stage.name, key="run")
        return shlex.quote(values[int(index)])

    return _PLACEHOLDER.sub(sub, stage.target)


def _param(params: dict, dotted: str, stage: str) -> object:
    value: object = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StageFailed(f"{{params.{dotted}}}: no such parameter", stage=stage, key="run")
        value = value[part]
    return value


def execute(job: Job) -> Output:
    stage, wf = job.stage, job.workflow
    command = expand(stage, input_args(job))
    job.run.begin(None, None)  # the record now claims no output: a kill from here reruns the stage
    clear_outputs(wf.project_dir, stage.outputs)
    job.progress(0, None)
    watched = _own_inputs(job)
    before = _states(wf.project_dir, watched)
    echo = job.command_started(command)
    with _command_env(wf) as env:
        code = _run_logged(command, wf.project_dir, job.run.dir / "log.txt", echo, env,
                           job.cancel)
    code_files = set(job.run.record.code) - set(job.run.record.file_inputs)
    job.run.warnings += _changed_inputs(wf.project_dir, before, code_files)
    if code != 0:
        ended = f"was killed by {_signal_name(-code)}" if code < 0 else \
            f"exited with status {code}"
        raise StageFailed(f"command {ended}\n  command: {command}", stage=stage.name)
    try:
        return files_output(wf, list(stage.outputs), stage.name)
    except StageFailed as exc:
        exc.message += f"\n  command: {command}"
        raise


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _own_inputs(job: Job) -> dict[str, FileState]:
    """The stage's plain-file inputs and `code:` files, as planned: what its command must not
    change. Stage inputs are other stages' outputs, which the command has no reason to write."""
    from ..external import DIST, MODULE

    record = job.run.record
    files = {k: v for k, v in record.code.items() if not k.startswith((DIST, MODULE))}
    return {**files, **record.file_inputs}


def _states(project: Path, files: dict[str, FileState]) -> dict[str, FileState | None]:
    """Each file as it is now (hashed only when its stats moved since it was planned)."""
    return {rel: check_file(project / rel, rel, known) for rel, known in files.items()}


def _digest(state: FileState | None) -> str | None:
    return state.digest if state is not None else None


def _changed_inputs(project: Path, before: dict[str, FileState | None], code: Iterable[str]
                    ) -> list[StageWarning]:
    """A warning for each of the stage's own inputs the command changed or removed: its record
    keeps the digest it was planned with, so the next build runs the stage again."""
    from ..report import StageWarning

    after = _states(project, {rel: state for rel, state in before.items() if state is not None})
    return [StageWarning(
        "input_changed_by_command",
        f"the command {'removed' if new is None else 'changed'} {rel}, "
        f"{'a code file' if rel in code else 'an input'} of this stage; the next build runs "
        "the stage again", rel, _OWN_INPUT_HINT)
        for rel, new in after.items() if new is None or new.digest != _digest(before[rel])]


_OWN_INPUT_HINT = ("a command must not write its own inputs; `{inputs}` passes every input, "
                   "this file too: pass only some with `{inputs[NAME]}` or `{inputs.stages}`, "
                   "and list scripts under `code:`")


def files_output(wf: Workflow, outputs: list[str], stage: str) -> Output:
    """A run stage's output: its declared files as they are on disk (StageFailed if one is
    missing)."""
    files = _output_states(wf, outputs, stage)
    parts = [f"{f.path}\0{f.digest}" for f in files]
    return Output("files", None, digest_strings(parts), tuple(files))


def clear_outputs(project: Path, outputs: tuple[str, ...] | list[str]) -> None:
    """Remove every declared output (a file, a folder and all it holds, a symlink itself), as DVC
    does: the command then starts from what a build from scratch starts from, so files of an
    earlier run cannot survive in a folder output and a command that writes nothing fails."""
    for out in outputs:
        remove_path(project / out)


@contextlib.contextmanager
def _command_env(wf: Workflow) -> Iterator[dict[str, str]]:
    """dd-build's environment, once the project's bytecode cannot be stale (pycache.py): a
    `__pycache__` entry written before an edit in the same second, with the same size, would
    otherwise run the old code. Libraries keep their own bytecode. Where an entry cannot be
    made safe, the command gets a fresh, empty PYTHONPYCACHEPREFIX (removed afterwards): every
    module compiles from source."""
    from ..pycache import prepare

    env = dict(os.environ)
    if prepare(wf.project_dir, wf.project_dir / wf.artifacts, env):
        yield env
        return
    fresh = tempfile.mkdtemp(prefix="dd-build-pycache-")
    try:
        yield {**env, "PYTHONPYCACHEPREFIX": fresh}
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _run_logged(command: str, cwd: Path, log: Path, echo: Callable[[bytes], None] | None,
                env: dict[str, str], cancel: threading.Event | None = None) -> int:
    """Run with stdout and stderr in the stage's log; the log appears whole or not at all.
    With `echo` (`-v`), the output also goes there as it comes.

    The command runs in its own session (process group), so that when dd-build is interrupted
    (SIGINT, SIGTERM, SIGHUP) it can end the command's whole group, not only the shell: a
    compound command's children would otherwise run on holding the build lock. A SIGKILLed
    dd-build cannot: then the command runs on, and keeps the lock until it ends. With stages
    running at once the signal reaches the main thread, which sets `cancel`: the group is
    ended the same way, and Interrupted raised here."""
    tmp = temp_name(log)
    try:
        with open(tmp, "wb") as fh:
            proc = subprocess.Popen(command, shell=True, cwd=cwd,
                                    stdout=fh if echo is None else subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    pass_fds=held_lock_fds(), env=env,
                                    start_new_session=True)
            try:
                if echo is not None:
                    _tee(proc, fh, echo, cancel)
                code = _wait(proc, cancel)
            except BaseException:  # KeyboardInterrupt, Interrupted (SIGTERM), anything else
                end_process_group(proc)
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, log)
    finally:
        tmp.unlink(missing_ok=True)
    return code


def _wait(proc: subprocess.Popen[bytes], cancel: threading.Event | None) -> int:
    """The command's exit status; Interrupted once `cancel` is set. In the main thread (one
    stage at a time) a signal interrupts the wait itself: no polling, no latency."""
    if cancel is None or threading.current_thread() is threading.main_thread():
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=_CANCEL_POLL_S)
        except subprocess.TimeoutExpired:
            _check(cancel)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        from ..errors import Interrupted

        raise Interrupted(signal.SIGINT)  # the main thread re-raises its own signal


def _tee(proc: subprocess.Popen[bytes], fh: BinaryIO, echo: Callable[[bytes], None],
         cancel: threading.Event | None = None) -> None:
    """Copy the command's output to the log and to `echo` until the command has ended and
    written all it wrote. A process it left running in the background may hold the pipe
    open: once the command has ended, what is in the pipe is copied and the pipe closed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with proc.stdout, selectors.DefaultSelector() as ready:
        ready.register(fd, selectors.EVENT_READ)
        while True:
            _check(cancel)
            if not ready.select(timeout=_CANCEL_POLL_S):
                if proc.poll() is None:
                    continue
                os.set_blocking(fd, False)  # ended: take what is buffered, then stop
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            fh.write(data)
            echo(data)


def _output_states(wf: Workflow, outputs: list[str], stage: str) -> list[FileState]:
    files: list[FileState] = []
    for out in outputs:
        path = wf.project_dir / out
        if path.is_dir():
            rels = sorted(p.relative_to(wf.project_dir).as_posix() for p in path.rglob("*")
                          if p.is_file())
        elif path.is_file():
            rels = [out]
        else:
            raise StageFailed(f"the command did not create its declared output {out}",
                              stage=stage, key="outputs")
        for rel in rels:
            state = check_file(wf.project_dir / rel, rel, None)
            assert state is not None
            files.append(state)
    return files
