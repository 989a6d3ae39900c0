"""`datadesigner`: a stage whose rows a Data Designer config makes (an optional extra).

The stage runs Data Designer in a process of its own (kinds/ddchild.py) in the stage's
`datadesigner/` folder, which holds Data Designer's home (`home/`), the seed table
(`seed.parquet`), the config as run (`request.json`) and Data Designer's own artifacts
(`run/dataset/`). Each batch file Data Designer finishes is copied into the stage's batches
(one dd-build batch per Data Designer batch, same index), so the record lists it before the
next one finishes. A killed or failed stage resumes through Data Designer's own resume
(`ResumeMode.ALWAYS` on that folder): it regenerates no finished batch. A fresh run removes
the folder first.

A batch that lost rows because their generation failed is never kept (ddchild.py tells them
from rows the config drops by design): the stage fails naming it, and its file is removed from
Data Designer's folder so that its resume makes it again. Before a resume, any short batch not
known to be short by design (a kill before it was judged; a record of an older dd-build) is
dropped the same way.

The config file is the stage's code: its content is fingerprinted. `{{ params.KEY }}` in it is
replaced by the stage's parameter before Data Designer reads it (a string as it is, anything
else as JSON), so a prompt or a sampler's values can come from `params:`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..ddconfig import (
    check_model_providers,
    load_config,
    parse_providers,
    resolve_providers,
)
from ..errors import StageFailed
from ..records import Output
from . import Job, check_cancel
from .ddchild import DATASET, RUN, batch_index, batch_rows, read_by_design

FOLDER = "datadesigner"


def execute(job: Job) -> Output:
    from .generate import _seed_table

    stage = job.stage
    _check_installed(stage.name)
    folder = job.run.dir / FOLDER
    config = load_config(job.workflow.project_dir, stage.target, stage.params, stage.name)
    providers = _providers(job, config)
    seed = _seed_table(job)
    num_records = stage.num_records if stage.num_records is not None else seed.num_rows \
        if seed is not None else 0
    total = -(-num_records // stage.batch_size)
    resume = job.run.resuming and (folder / RUN / DATASET).is_dir()
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    _untrust_short_batches(job, folder, num_records)
    # in the `running` record begin() writes: a killed run's record says what config it ran
    job.run.record.extra["datadesigner"] = {"config": config}
    job.run.begin(total, num_records)
    folder.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        _write_seed(folder, seed)
    request = {"config": config, "config_file": stage.target, "providers": providers, "num_records": num_records,
               "buffer_size": stage.batch_size, "row_groups": stage.concurrency,
               "resume": resume,
               "seed": "seed.parquet" if seed is not None else None}
    (folder / "request.json").write_text(json.dumps(request, indent=1), encoding="utf-8")
    job.progress(len(job.run.batches), total)
    lost = _run_child(job, folder, total)
    _remove_untrusted(job, folder, num_records)
    _mirror_rest(job, folder, error=bool(lost))
    job.progress(len(job.run.batches), total)
    if lost or len(job.run.batches) < total:
        rows = sum(b.rows for b in job.run.batches.values())
        finished = (f"Data Designer finished {len(job.run.batches)} of {total} batches ({rows} "
                    f"of {num_records} rows)")
        if lost:
            raise StageFailed(f"{finished}: {_lost_message(lost)}", stage=stage.name,
                              hint="the warnings in the stage's log.txt say more")
        raise StageFailed(
            f"{finished}: it stopped early (its warnings in the stage's log.txt say why); the "
            "finished batches are kept and the next build resumes", stage=stage.name)
    return job.run.batches_output()


def clear_working_folder(stage_dir: Path) -> None:
    """A stage restored from the build cache is complete: its `datadesigner/` folder (the
    request, home and batch files of whichever run was last here) serves only to resume a
    killed run, and would not match the restored record: it goes (cachestage.py calls this)."""
    shutil.rmtree(stage_dir / FOLDER, ignore_errors=True)


def _lost_message(lost: list[dict[str, Any]]) -> str:
    """`batch 1 lost 2 of its 4 rows, batch 2 all 4, as generation failed (…)`."""
    parts: list[str] = []
    for e in sorted(lost, key=lambda e: int(e["index"])):
        gone, size = e["size"] - e["rows"], e["size"]
        if not parts:
            parts.append(f"batch {e['index']} lost " + (
                f"all its {size} rows" if gone == size else f"{gone} of its {size} rows"))
        else:
            parts.append(f"batch {e['index']} " + (f"all {size}" if gone == size else
                                                   f"{gone} of {size}"))
    if all(e.get("known") for e in lost):
        cause = ", as generation failed"  # rows a config drops by design go with them
    else:
        cause = (", and this data-designer does not tell dd-build whether they were dropped by "
                 "design or because their generation failed")
    why = next((f" (Data Designer logged: {e['why']})" for e in lost if e.get("why")), "")
    return (f"{', '.join(parts)}{cause}{why}; a batch that lost rows is not kept: the next "
            "build resumes, generating them again")


def _check_installed(stage: str) -> None:
    """The extra is there: else the stage fails before it touches anything (its last record
    stays), saying how to install it."""
    import importlib.util

    try:
        found = importlib.util.find_spec("data_designer.interface") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise StageFailed("Data Designer is not installed in this Python "
                          f"({sys.executable})", stage=stage, key="datadesigner",
                          hint="install the extra: pip install -e '.[datadesigner]' in dd-build's "
                               "folder")


def _providers(job: Job, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The providers of `models:` (Data Designer's model_providers.yaml format), or none;
    checked before anything of the stage is touched. Each `api_key` stays a variable's name:
    the key reaches Data Designer through the child's environment only."""
    stage = job.stage
    providers: list[dict[str, Any]] = []
    if stage.models is not None:
        path = job.workflow.project_dir / stage.models
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StageFailed(f"cannot read the model providers {stage.models}: {exc}",
                              stage=stage.name, key="models") from exc
        providers = parse_providers(text, stage.models, stage.name)
    check_model_providers(config, stage.target, providers, stage.models, stage.name)
    return resolve_providers(providers, stage.models or "", stage.name, os.environ)


def _write_seed(folder: Path, seed: Any) -> None:
    import pyarrow.parquet as pq

    tmp = folder / f".seed.parquet.tmp.{os.getpid()}"
    pq.write_table(seed, tmp)
    os.replace(tmp, folder / "seed.parquet")


def child_env(folder: Path) -> dict[str, str]:
    """dd-build's environment, made hermetic for Data Designer: its home is the stage's own
    (no ~/.data-designer), no telemetry, no plugins; buildtool importable."""
    env = dict(os.environ)
    env.update({
        "DATA_DESIGNER_HOME": str(folder / "home"),
        "NEMO_TELEMETRY_ENABLED": "false",
        "DISABLE_DATA_DESIGNER_PLUGINS": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return env


def _run_child(job: Job, folder: Path, total: int) -> list[dict[str, Any]]:
    """Run Data Designer; the `lost` events of the batches that lost rows."""
    from ..capture import stage_log
    from ..lock import held_lock_fds
    from ..procgroup import end_process_group

    read_fd, write_fd = os.pipe()
    env = child_env(folder)
    with open(stage_log(job.run.dir), "ab") as log:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "buildtool.kinds.ddchild", str(write_fd)],
                cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(write_fd, *held_lock_fds()),
                start_new_session=True)
        finally:
            os.close(write_fd)
    watcher = threading.Thread(target=_end_on_cancel, args=(job, proc), daemon=True)
    watcher.start()
    error = None
    lost: list[dict[str, Any]] = []
    try:
        with os.fdopen(read_fd, encoding="utf-8") as reports:
            for line in reports:
                event = json.loads(line)
                if event["event"] == "batch":
                    _mirror(job, folder / event["path"])
                    job.progress(len(job.run.batches), total)
                elif event["event"] == "library":
                    _note_library(job, event)
                elif event["event"] == "config":
                    job.run.record.extra["datadesigner"]["fingerprint"] = event["fingerprint"]
                elif event["event"] == "lost":
                    lost.append(event)
                elif event["event"] == "error":
                    error = event
        code = proc.wait()
    except BaseException:  # KeyboardInterrupt, Interrupted, a bug: the child goes too
        end_process_group(proc)
        raise
    finally:
        proc.poll()
    check_cancel(job)
    if code != 0 and not lost:  # else the batches that lost rows say more
        raise _failure(job, code, error)
    return lost


def _end_on_cancel(job: Job, proc: subprocess.Popen[bytes]) -> None:
    """-j: SIGINT/SIGTERM set job.cancel in the main thread; the child is ended (its batches
    so far are kept: the next build resumes them)."""
    while proc.poll() is None:
        if job.cancel.wait(0.2):
            from ..procgroup import end_process_group

            end_process_group(proc)
            return


def _failure(job: Job, code: int, error: dict[str, Any] | None) -> StageFailed:
    done = len(job.run.batches)
    kept = f"; {done} finished batch{'es' if done != 1 else ''} kept: the next build resumes" \
        if done else ""
    if error is None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return StageFailed(f"Data Designer {how}{kept}", stage=job.stage.name)
    if error["type"] == "config":  # ddchild.py says which column and field
        return StageFailed(f"Data Designer cannot read the config: {error['message']}{kept}",
                           stage=job.stage.name, key="datadesigner",
                           hint="fix the config; `dd-build -n` does not check it against "
                                "Data Designer (only a run does)")
    return StageFailed(f"Data Designer raised {error['type']}: {error['message']}{kept}",
                       stage=job.stage.name,
                       hint="the traceback is in the stage's log.txt")


def _note_library(job: Job, event: dict[str, Any]) -> None:
    """The installed Data Designer is code of the stage, like a library its Python code
    imports: a new version reruns it (`code: installed data-designer changed: …`)."""
    from ..codedeps import EXT, GRAPH
    from ..fingerprint import FileState

    tracker = job.run.code_deps
    if tracker is None:
        return
    node = EXT + event["module"]
    GRAPH.add_edge(job.stage.target, node)
    GRAPH.set_state(node, event["key"], FileState.from_json(event["state"]), event["module"])
    tracker.add_roots([job.stage.target])


def _mirror(job: Job, path: Path) -> None:
    """One finished Data Designer batch file becomes the stage's batch of the same index."""
    import pyarrow.parquet as pq

    index = batch_index(path.name)
    if index is None or index in job.run.batches:
        return
    data = path.read_bytes()
    table = pq.read_table(path)
    job.run.write_batch(index, table, data)


def _batch_files(folder: Path) -> dict[int, Path]:
    files = folder / RUN / DATASET / "parquet-files"
    if not files.is_dir():
        return {}
    found = {}
    for path in files.glob("batch_*.parquet"):
        index = batch_index(path.name)
        if index is not None:
            found[index] = path
    return found


def _trusted(index: int, rows: int, num_records: int, batch_size: int,
             by_design: dict[int, int]) -> bool:
    """A batch with all its rows, or one Data Designer made short by design (ddchild.py)."""
    return rows >= batch_rows(index, num_records, batch_size) or by_design.get(index) == rows


def _untrust_short_batches(job: Job, folder: Path, num_records: int) -> None:
    """Before the run: a kept batch, or a file in Data Designer's folder, that is short and
    not known to be short by design is dropped (a kill before it was judged; a record of an
    older dd-build), so that Data Designer's resume makes that batch again."""
    by_design = read_by_design(str(folder))
    job.run.drop_batches([b.index for b in job.run.batches.values() if not _trusted(
        b.index, b.rows, num_records, job.stage.batch_size, by_design)])
    _remove_untrusted(job, folder, num_records)


def _remove_untrusted(job: Job, folder: Path, num_records: int) -> None:
    """Remove Data Designer's short batch files not known to be short by design (but those of
    kept batches): its resume makes them again (its progress is the files there, whatever its
    metadata.json says)."""
    import pyarrow.parquet as pq

    by_design = read_by_design(str(folder))
    for index, path in _batch_files(folder).items():
        if index in job.run.batches:
            continue
        rows = pq.read_metadata(path).num_rows
        if not _trusted(index, rows, num_records, job.stage.batch_size, by_design):
            path.unlink()


def _mirror_rest(job: Job, folder: Path, error: bool = False) -> None:
    """Batches Data Designer finished that were not reported (a kill between its write and
    our copy; a resume does not report batches it had). Only trusted ones are left."""
    for _, path in sorted(_batch_files(folder).items()):
        _mirror(job, path)
    if not job.run.batches and not error:
        raise StageFailed("Data Designer finished without writing a batch",
                          stage=job.stage.name)
