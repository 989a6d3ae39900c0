"""Never stale across renames (issue 11): stage code that reads what depends on the stage's
name or folder (`ctx.stage_name` in generate, transform and on_success code; a callback's
`ctx.stage_output` and `ctx.out_dir`) is noted per batch and step, and a cache entry is
restored under another name (or into another folder) only when its build read none of it.
Each test compares with a build from scratch (DD_BUILD_CACHE=off). Real CLI on temp projects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import env  # noqa: E402


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def ok(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = dd(root, *args, **extra)
    assert done.returncode == 0, done.stderr
    return done


def results(root: Path, *args: str, **extra: str) -> dict[str, tuple[str, str]]:
    stages = json.loads(ok(root, "--json", *args, **extra).stdout)["stages"]
    return {s["stage"]: (s["action"], s["result"]) for s in stages}


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def record(root: Path, stage: str, workflow: str = "demo") -> dict[str, Any]:
    return json.loads((root / "artifacts" / workflow / stage / "stage.json").read_text())


def table_rows(root: Path, stage: str, workflow: str = "demo") -> list[dict[str, Any]]:
    """The stage's selected output, as its record names it."""
    import pyarrow.parquet as pq

    rec = record(root, stage, workflow)
    if rec["output"]["kind"] == "batches":
        files = [root / "artifacts" / workflow / b["file"] for b in rec["batches"]]
    else:
        files = [root / f["path"] for f in rec["output"]["files"]]
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def logged(root: Path) -> list[str]:
    log = root / "calls.log"
    found = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return found


def project(root: Path, code: str, workflow: str) -> Path:
    write(root, "src/s.py", code)
    write(root, "Workflowfile", workflow)
    return root


def scratch_rows(tmp_path: Path, code: str, workflow: str, stage: str) -> list[dict[str, Any]]:
    other = project(tmp_path / "scratch", code, workflow)
    ok(other, "-q", DD_BUILD_CACHE="off")
    return table_rows(other, stage)


CODE = '''
from pathlib import Path

def _log(what):
    with open(Path(__file__).resolve().parents[1] / "calls.log", "a") as fh:
        fh.write(what + "\\n")

def named(ctx):
    _log(f"named-{ctx.batch_index}")
    return [{"id": ctx.offset + i, "who": ctx.stage_name} for i in range(ctx.size)]

def plain(ctx):
    _log(f"plain-{ctx.batch_index}")
    return [{"id": ctx.offset + i, "k": ctx.params["k"]} for i in range(ctx.size)]

def total(ctx):
    _log("total")
    import pyarrow as pa
    (t,) = ctx.inputs.values()
    return pa.table({"n": [t.num_rows], "who": [ctx.stage_name]})

def tag(ctx):
    """Writes the stage's name into its output."""
    _log("tag")
    import pyarrow as pa
    import pyarrow.parquet as pq
    t = pq.read_table(ctx.stage_output)
    t = t.append_column("tag", pa.array([ctx.stage_name] * t.num_rows))
    out = Path(ctx.out_dir) / "tagged.parquet"
    pq.write_table(t, out)
    return str(out)

def where(ctx):
    """Writes only where it was told to (its folder), without the stage's name."""
    _log("where")
    import pyarrow.parquet as pq
    t = pq.read_table(ctx.stage_output)
    out = Path(ctx.out_dir) / "copy.parquet"
    pq.write_table(t.slice(0, 2), out)
    return str(out)

def only_params(ctx):
    _log("only_params")
    assert ctx.params["k"] > 0
    return None
'''


def wf(body: str, workflow: str = "demo") -> str:
    return f"workflow: {workflow}\nstages:\n{body}"


GEN = "  a:\n    generate: src/s.py:{fn}\n    num_records: 4\n    batch_size: 2\n" \
      "    params: {{k: 5}}\n"


def rename(root: Path, text: str, old: str = "a", new: str = "b") -> str:
    renamed = text.replace(f"  {old}:\n", f"  {new}:\n").replace(f"[{old}]", f"[{new}]")
    write(root, "Workflowfile", renamed)
    return renamed


# ---------------------------------------------------------------- what reads the name

def test_a_transform_that_read_its_name_is_built_again_under_a_new_name(
        tmp_path: Path) -> None:
    text = wf(GEN.format(fn="plain") + "  t:\n    transform: src/s.py:total\n    inputs: [a]\n")
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    assert record(root, "t")["batches"][0]["reads"] == ["stage_name"]
    assert "reads" not in record(root, "a")["batches"][0]  # plain() read nothing of it
    renamed = rename(root, text, "t", "u")
    logged(root)
    assert results(root)["u"] == ("run", "completed")
    assert logged(root) == ["total"]
    assert table_rows(root, "u") == scratch_rows(tmp_path, CODE, renamed, "u")
    assert table_rows(root, "u")[0]["who"] == "u"


def test_a_callback_that_read_its_name_is_built_again_under_a_new_name(
        tmp_path: Path) -> None:
    text = wf(GEN.format(fn="plain") + "    on_success: src/s.py:tag\n")
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    assert record(root, "a")["steps"]["callback"]["reads"] == \
        ["out_dir", "stage_name", "stage_output"]
    renamed = rename(root, text)
    logged(root)
    assert results(root)["b"] == ("run", "completed")
    assert logged(root) == ["plain-0", "plain-1", "tag"]
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")
    assert {r["tag"] for r in table_rows(root, "b")} == {"b"}
    assert all(f["path"].startswith("artifacts/demo/b/callback/")
               for f in record(root, "b")["output"]["files"])


def test_a_callback_that_read_only_its_folder_is_built_again_under_a_new_name(
        tmp_path: Path) -> None:
    """ctx.out_dir and ctx.stage_output name the stage's folder: a callback may write them
    into its rows (it is not known whether it did), so a rename runs the stage again."""
    text = wf(GEN.format(fn="plain") + "    on_success: src/s.py:where\n")
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    assert record(root, "a")["steps"]["callback"]["reads"] == ["out_dir", "stage_output"]
    renamed = rename(root, text)
    status = ok(root, "status").stdout
    assert "renamed from it? Its code read ctx.out_dir, ctx.stage_output" in status, status
    assert "It is restored" not in status
    reasons = {s["stage"]: s["reasons"] for s in json.loads(ok(root, "status", "--json")
                                                            .stdout)["stages"]}
    assert any(r.get("renamed_from") == "a" and r.get("not_restored") == "name_read"
               for r in reasons["b"]), reasons
    assert results(root)["b"] == ("run", "completed")
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")


def test_a_callback_that_read_only_its_params_is_restored_under_a_new_name(
        tmp_path: Path) -> None:
    text = wf(GEN.format(fn="plain") + "    on_success: src/s.py:only_params\n")
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    assert "reads" not in record(root, "a")["steps"]["callback"]
    renamed = rename(root, text)
    assert "It is restored from the build cache." in ok(root, "status").stdout
    logged(root)
    assert results(root)["b"] == ("restore", "restored")
    assert logged(root) == []
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")


def test_the_status_of_a_rename_that_read_its_name_promises_no_restore(tmp_path: Path) -> None:
    text = wf(GEN.format(fn="named"))
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    rename(root, text)
    status = ok(root, "status").stdout
    assert "'a' (no longer in the Workflowfile) was built from this stage's spec, code and " \
           "inputs: renamed from it? Its code read ctx.stage_name" in status, status
    assert "It is restored" not in status
    assert "restore (from cache" not in ok(root, "--explain", "-n").stdout
    assert results(root)["b"] == ("run", "completed")
    assert {r["who"] for r in table_rows(root, "b")} == {"b"}


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_batches_in_flight_report_a_read_of_the_name(tmp_path: Path, executor: str) -> None:
    """`executor: process` workers (and threads) send the read back with each batch."""
    body = GEN.format(fn="named").replace("num_records: 4", "num_records: 6") + \
        f"    concurrency: 2\n    executor: {executor}\n"
    text = wf(body)
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    assert [b.get("reads") for b in record(root, "a")["batches"]] == [["stage_name"]] * 3
    renamed = rename(root, text)
    assert results(root)["b"] == ("run", "completed")
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")
    assert {r["who"] for r in table_rows(root, "b")} == {"b"}


def test_a_retried_batch_notes_a_read_of_a_failed_attempt(tmp_path: Path) -> None:
    """An attempt that read the name and then failed decided nothing, but the note is kept
    (a retry reads what the first attempt read: safe, never stale)."""
    code = CODE + '''
def flaky(ctx):
    marker = Path(__file__).resolve().parents[1] / f"tried-{ctx.batch_index}"
    if not marker.exists():
        marker.write_text(ctx.stage_name)
        raise RuntimeError("first attempt")
    return [{"id": ctx.offset + i} for i in range(ctx.size)]
'''
    text = wf(GEN.format(fn="flaky") + "    retries: 1\n")
    root = project(tmp_path / "p", code, text)
    ok(root, "-q", DD_BUILD_RETRY_BASE_S="0")
    assert [b.get("reads") for b in record(root, "a")["batches"]] == [["stage_name"]] * 2


# ---------------------------------------------------------------- same name: unaffected

def test_a_revert_of_a_stage_that_reads_its_name_is_restored(tmp_path: Path) -> None:
    text = wf(GEN.format(fn="named") + "  t:\n    transform: src/s.py:total\n    inputs: [a]\n")
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    write(root, "Workflowfile", text.replace("k: 5", "k: 6"))
    ok(root, "-q")
    write(root, "Workflowfile", text)
    logged(root)
    assert results(root) == {"a": ("restore", "restored"), "t": ("up_to_date", "up_to_date")}
    assert logged(root) == []
    assert table_rows(root, "a") == scratch_rows(tmp_path, CODE, text, "a")


# ---------------------------------------------------------------- another folder

def test_another_workflow_sharing_the_cache_restores_by_what_its_code_read(
        tmp_path: Path) -> None:
    """The same stage name in another workflow (another folder), on one shared cache: code
    that read only its name is restored; a callback that read its folder is built again."""
    cache = str(tmp_path / "shared-cache")
    body = GEN.format(fn="named") + "  c:\n    generate: src/s.py:plain\n" \
        "    num_records: 2\n    batch_size: 2\n    params: {k: 1}\n" \
        "    on_success: src/s.py:where\n"
    first = project(tmp_path / "one", CODE, wf(body, "one"))
    ok(first, "-q", DD_BUILD_CACHE=cache)
    second = project(tmp_path / "two", CODE, wf(body, "two"))
    logged(second)
    assert results(second, DD_BUILD_CACHE=cache) == {"a": ("restore", "restored"),
                                                     "c": ("run", "completed")}
    assert sorted(logged(second)) == ["plain-0", "where"]
    other = project(tmp_path / "scratch", CODE, wf(body, "two"))
    ok(other, "-q", DD_BUILD_CACHE="off")
    for stage in ("a", "c"):
        assert table_rows(second, stage, "two") == table_rows(other, stage, "two")


# ---------------------------------------------------------------- entries of before

def _strip_notes(entry_path: Path) -> None:
    """Make an entry look as one stored before dd-build noted name reads (its check redone)."""
    from buildtool.cache import _checked
    from buildtool.records import READS_NOTED

    data = json.loads(entry_path.read_text())
    body = {k: v for k, v in data.items() if k != "check"}
    body["record"]["extra"].pop(READS_NOTED)
    entry_path.write_text(json.dumps(_checked(body), sort_keys=True))


def test_an_entry_of_before_the_notes_is_restored_under_its_own_name_only(
        tmp_path: Path) -> None:
    text = wf(GEN.format(fn="plain"))
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    write(root, "Workflowfile", text.replace("k: 5", "k: 6"))
    ok(root, "-q")
    entries = sorted((root / "artifacts" / ".cache" / "entries").glob("*/*.json"))
    assert len(entries) == 2
    for path in entries:
        _strip_notes(path)
    write(root, "Workflowfile", text)  # a revert, under its own name: restored
    logged(root)
    assert results(root)["a"] == ("restore", "restored")
    assert logged(root) == []
    renamed = rename(root, text)  # plain() read nothing, but that entry did not say so
    status = ok(root, "status").stdout
    assert "It is restored" not in status, status
    assert results(root)["b"] == ("run", "completed")
    assert logged(root) == ["plain-0", "plain-1"]
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")
    # its own build under the new name says what it read: the next rename is restored
    rename(root, renamed, "b", "c")
    assert results(root)["c"] == ("restore", "restored")


def test_a_growth_that_keeps_batches_of_a_record_of_before_does_not_claim_the_notes(
        tmp_path: Path) -> None:
    from buildtool.records import READS_NOTED

    text = wf(GEN.format(fn="plain"))
    root = project(tmp_path / "p", CODE, text)
    ok(root, "-q")
    path = root / "artifacts" / "demo" / "a" / "stage.json"
    rec = json.loads(path.read_text())
    assert rec["extra"][READS_NOTED] is True
    rec["extra"].pop(READS_NOTED)  # as a dd-build of before wrote it
    path.write_text(json.dumps(rec))
    write(root, "Workflowfile", text.replace("num_records: 4", "num_records: 6"))
    assert results(root)["a"][0] == "grow"
    assert READS_NOTED not in record(root, "a")["extra"]
    grown = text.replace("num_records: 4", "num_records: 6")
    renamed = rename(root, grown)  # plain() read nothing, but its first batches did not say
    assert results(root)["b"] == ("run", "completed")
    assert table_rows(root, "b") == scratch_rows(tmp_path, CODE, renamed, "b")
