"""`run`: a shell command with `{inputs}`, `{outputs}`, `{inputs[0]}`, `{params.key}` expanded."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import StageFailed
from ..fingerprint import FileState, check_file, digest_strings, expand_glob
from ..fsutil import remove_path, temp_name
from ..globreach import is_glob
from ..lock import held_lock_fds
from ..model import Workflow
from ..placeholders import PLACEHOLDER as _PLACEHOLDER
from ..procgroup import end_process_group
from ..records import Output
from . import Job, input_paths


def input_args(job: Job) -> list[str]:
    wf = job.workflow
    args: list[str] = []
    for ref in job.stage.dependencies:
        if ref.kind == "stage":
            paths = input_paths(wf, wf.stages[ref.value], job.upstream[ref.value])
            args += [os.path.relpath(p, wf.project_dir) for p in paths]
        elif is_glob(ref.value):
            args += expand_glob(wf.project_dir, ref.value)
        else:  # a file, or a folder as itself (its files are the digests that count)
            args.append(ref.value)
    return args


def expand(command: str, inputs: list[str], outputs: list[str], params: dict, stage: str) -> str:
    def sub(match: re.Match[str]) -> str:
        group, index, param = match.groups()
        if param is not None:
            return shlex.quote(str(_param(params, param, stage)))
        values = inputs if group == "inputs" else outputs
        if index is None:
            return " ".join(shlex.quote(v) for v in values)
        if int(index) >= len(values):
            raise StageFailed(f"{{{group}[{index}]}}: the stage has only {len(values)} {group}",
                              stage=stage, key="run")
        return shlex.quote(values[int(index)])

    return _PLACEHOLDER.sub(sub, command)


def _param(params: dict, dotted: str, stage: str) -> object:
    value: object = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StageFailed(f"{{params.{dotted}}}: no such parameter", stage=stage, key="run")
        value = value[part]
    return value


def execute(job: Job) -> Output:
    stage, wf = job.stage, job.workflow
    command = expand(stage.target, input_args(job), list(stage.outputs), stage.params, stage.name)
    job.run.begin(None, None)  # the record now claims no output: a kill from here reruns the stage
    clear_outputs(wf.project_dir, stage.outputs)
    job.progress(0, None)
    code = _run_logged(command, wf.project_dir, job.run.dir / "log.txt")
    if code != 0:
        raise StageFailed(f"command exited with status {code}: {command}", stage=stage.name,
                          hint=f"see {os.path.relpath(job.run.dir / 'log.txt')}")
    return files_output(wf, list(stage.outputs), stage.name)


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


def _fresh_bytecode_env(pycache: str) -> dict[str, str]:
    """Python in the command compiles from source: a `__pycache__` written before an edit in
    the same second, with the same size, would otherwise run the old code."""
    return {**os.environ, "PYTHONPYCACHEPREFIX": pycache}


def _run_logged(command: str, cwd: Path, log: Path) -> int:
    """Run with stdout and stderr in the stage's log; the log appears whole or not at all.

    The command runs in its own session (process group), so that when dd-build is interrupted
    (SIGINT, SIGTERM, SIGHUP) it can end the command's whole group, not only the shell: a
    compound command's children would otherwise run on holding the build lock. A SIGKILLed
    dd-build cannot: then the command runs on, and keeps the lock until it ends."""
    tmp = temp_name(log)
    pycache = tempfile.mkdtemp(prefix="dd-build-pycache-")
    try:
        with open(tmp, "wb") as fh:
            proc = subprocess.Popen(command, shell=True, cwd=cwd, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    pass_fds=held_lock_fds(), env=_fresh_bytecode_env(pycache),
                                    start_new_session=True)
            try:
                code = proc.wait()
            except BaseException:  # KeyboardInterrupt, Interrupted (SIGTERM), anything else
                end_process_group(proc)
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, log)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(pycache, ignore_errors=True)
    return code


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
