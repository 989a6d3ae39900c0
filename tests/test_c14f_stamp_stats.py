"""The null-build stamp holds the stats the decisions used, handed over by the probe.

The stamp (buildtool/nullstamp.py) no longer stats the files a second time after the build:
it stores the stats the probe took (probe.Kept). So a file that changes after the probe,
while the command still runs, must leave a stamp that does not hold: the next command takes
the full path and says what the files say. Such a change is made here by a hooked CLI (the
real one, with an edit run right after the probe, or right before the stamp is stored), for
every kind of file a decision reads (code, an imported module, an input, a glob's answer,
batch files, a record, a run stage's outputs, the Workflowfile), each by a change of content
and by one that keeps size and mtime (only the inode or ctime tells). A control edit that
changes nothing must be answered from the stamp: each test can tell the two apart.

Also: the files a stage wrote in a build are never stamped from the stats before it ran;
and in-process, the stamp holds every file a decision read, each with its stats as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHAIN, REPO, Project, Result
from test_nbfast_stamp import full, run, same, settled, stamps

FILES = CHAIN + """
  d:
    transform: code/stages.py:join
    inputs: [a, data/seed.csv, "data/*.jsonl"]
  e:
    generate: code/words.py:rows
    num_records: 2
    batch_size: 1
  r:
    run: python3 code/report.py {outputs}
    code: [code/report.py]
    outputs: [out/report.txt, out/more.txt]
"""

WORDS = """\
from helpers.text import WORD


def rows(ctx):
    return [{"i": ctx.offset + i, "w": WORD} for i in range(ctx.size)]
"""

REPORT = """\
import os, sys

for path in sys.argv[1:]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("report " + os.path.basename(path) + "\\n")
if os.environ.get("EDIT_SEED"):  # a run stage's command that changes another stage's input
    with open("data/seed.csv", "a") as fh:
        fh.write("2,3\\n")
"""

# The real CLI with one edit made during the command: right after the probe (`after_probe`)
# or right before the stamp is stored (`before_stamp`). argv: when, edit, the CLI's args.
HOOKED = '''\
import json, os, runpy, sys
from pathlib import Path

A = Path("artifacts/demo")


def batch(stage, i=0):
    return A / json.loads((A / stage / "stage.json").read_text())["batches"][i]["file"]


def touch_back(path, data):
    """Rewrite in place, same size, mtime put back: only the ctime tells."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_same(path, data):
    """Replace by another file (a new inode) of the same size and mtime."""
    st = path.stat()
    assert len(data) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def swapped(path, old, new):
    data = path.read_bytes()
    assert old in data
    return data.replace(old, new)


def flipped(path):
    data = path.read_bytes()
    return data[:-1] + bytes([data[-1] ^ 1])


def own(rel):
    """A file of the running dd-build: a copy of the package (DD_OWN_COPY), never the real one."""
    import buildtool

    folder = Path(buildtool.__file__).resolve().parent
    assert folder.parent == Path(os.environ["DD_OWN_COPY"]).resolve(), "not the copy"
    return folder / rel


def shadowed():
    """A new package `explain/` beside explain.py (a package is found first): new wording."""
    text = own("explain.py").read_text().replace("from .", "from ..")
    own("explain").mkdir()
    (own("explain") / "__init__.py").write_text(text.replace(': up to date"', ': current"'))


EDITS = {
    "nothing": lambda: None,
    "dd-build's module edited": lambda: own("explain.py").write_text(
        own("explain.py").read_text().replace(': up to date"', ': current"')),
    "dd-build's module edited, same size and mtime": lambda: touch_back(
        own("explain.py"), swapped(own("explain.py"), b': up to date"', b': UP TO DATE"')),
    "dd-build's module replaced, same size and mtime": lambda: replace_same(
        own("explain.py"), swapped(own("explain.py"), b': up to date"', b': UP TO DATE"')),
    "dd-build's module shadowed by a new package": shadowed,
    "dd-build's module added": lambda: own("added.py").write_text("X = 1\\n"),
    "dd-build's unused module deleted": lambda: own("kinds/ddchild.py").unlink(),
    "code edited": lambda: Path("code/stages.py").write_text(
        Path("code/stages.py").read_text() + "\\nK = 1\\n"),
    "code edited, same size and mtime": lambda: touch_back(
        Path("code/stages.py"), swapped(Path("code/stages.py"), b"tag", b"tug")),
    "imported module edited, same size and mtime": lambda: touch_back(
        Path("helpers/text.py"), swapped(Path("helpers/text.py"), b"one", b"two")),
    "input edited": lambda: Path("data/seed.csv").write_text("id,v\\n1,3,4\\n"),
    "input replaced, same size and mtime": lambda: replace_same(
        Path("data/seed.csv"), swapped(Path("data/seed.csv"), b"2", b"9")),
    "a file the glob matches added": lambda: Path("data/two.jsonl").write_text(\'{"x": 2}\\n\'),
    "batch file rewritten": lambda: batch("a").write_bytes(b"x" * 10),
    "batch file replaced, same size and mtime": lambda: replace_same(
        batch("b", 1), flipped(batch("b", 1))),
    "batch file deleted": lambda: batch("b").unlink(),
    "record touched back": lambda: touch_back(
        A / "c" / "stage.json", swapped(A / "c" / "stage.json", b\'"rows": 1\', b\'"rows": 2\')),
    "output edited, same size and mtime": lambda: touch_back(
        Path("out/report.txt"), flipped(Path("out/report.txt"))),
    "output deleted": lambda: Path("out/more.txt").unlink(),
    "Workflowfile replaced, same size and second": lambda: replace_same(
        Path("Workflowfile"), swapped(Path("Workflowfile"), b"tag: x", b"tag: y")),
}

when, edit = sys.argv[1], EDITS[sys.argv[2]]
if when == "after_probe":
    from buildtool import probe as probing

    planned = probing.probe

    def probe(*args, **kwargs):
        facts = planned(*args, **kwargs)
        edit()
        return facts

    probing.probe = probe  # execute.py, imported later, takes this one
else:
    from buildtool import nullstamp

    stored = nullstamp.Recorder.seen

    def seen(self, prep, report):
        edit()
        stored(self, prep, report)

    nullstamp.Recorder.seen = seen
sys.argv = ["buildtool", *sys.argv[3:]]
runpy.run_module("buildtool", run_name="__main__", alter_sys=True)
'''

EDITS = ["code edited", "code edited, same size and mtime",
         "imported module edited, same size and mtime", "input edited",
         "input replaced, same size and mtime", "a file the glob matches added",
         "batch file rewritten", "batch file replaced, same size and mtime",
         "batch file deleted", "record touched back", "output edited, same size and mtime",
         "output deleted", "Workflowfile replaced, same size and second"]


# dd-build's own files, changed during a command (the hooked CLI runs a copy of the package):
# each is one a stamp must not hold through, whatever the change does to the output.
OWN_EDITS = ["dd-build's module edited", "dd-build's module edited, same size and mtime",
             "dd-build's module replaced, same size and mtime",
             "dd-build's module shadowed by a new package", "dd-build's module added",
             "dd-build's unused module deleted"]


@pytest.fixture
def built(project: Project, tmp_path: Path) -> Project:
    project.write("Workflowfile", FILES)
    project.write("code/report.py", REPORT)
    project.write("code/words.py", WORDS)
    project.write("helpers/__init__.py", "")
    project.write("helpers/text.py", 'WORD = "one"\n')
    project.write("data/seed.csv", "id,v\n1,2\n")
    project.write("data/one.jsonl", '{"x": 1}\n')
    (tmp_path / "hooked.py").write_text(HOOKED)
    result = project.run()
    assert result.code == 0, result.stderr
    settled(project)
    return project


def hooked(project: Project, when: str, edit: str, *args: str,
           env: dict[str, str] | None = None) -> Result:
    """The CLI with `edit` made during the command (`when`: after_probe, before_stamp), from
    the full path: the stamps are removed first."""
    for stamp in stamps(project):
        stamp.unlink()
    proc = subprocess.run([sys.executable, str(project.root.parent / "hooked.py"), when, edit,
                           *args], cwd=project.root, env=env or project.env(),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def compiled_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of dd-build's package with its bytecode (so that each CLI of a copy starts as
    fast as an installed dd-build)."""
    import compileall

    folder = tmp_path_factory.mktemp("own") / "buildtool"
    shutil.copytree(REPO / "buildtool", folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(folder, quiet=1)
    return folder


def own_copy(project: Project, package: Path, folder: Path) -> dict[str, str]:
    """The environment of a CLI that runs a copy of dd-build's `package`, in `folder` (its
    files may be edited: never the real package's). Its bytecode is copied with the files'
    mtimes, so it is used, as it would be of an installed dd-build."""
    shutil.copytree(package, folder / "buildtool")
    return project.env(PYTHONPATH=str(folder), DD_OWN_COPY=str(folder))


def full_with(project: Project, env: dict[str, str], *args: str) -> Result:
    """The full path (the stamps moved away, put back after) of the CLI of `env`."""
    kept = {p: p.read_bytes() for p in stamps(project)}
    for p in kept:
        p.unlink()
    try:
        result, fast = run(project, *args, env=env)
    finally:
        for p, data in kept.items():
            p.write_bytes(data)
    assert not fast
    return result


def up_to_date(result: Result) -> dict[str, bool]:
    return {s["stage"]: s["up_to_date"] for s in result.json()["stages"]}


@pytest.mark.parametrize("when", ["after_probe", "before_stamp"])
def test_a_command_during_which_nothing_changed_is_stamped(built: Project, when: str) -> None:
    """The control: the hooked CLI stores a stamp that answers the next command."""
    for args in (("--json",), ("status", "--json")):
        result = hooked(built, when, "nothing", *args)
        assert result.code == 0, result.stderr
        got, fast = run(built, *args)
        assert fast, (args, got.stderr)
        same(got, result)


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("when", ["after_probe", "before_stamp"])
def test_a_file_changed_during_a_null_build_is_not_stamped_as_unchanged(
        built: Project, when: str, edit: str) -> None:
    result = hooked(built, when, edit, "--json")
    assert result.code == 0, result.stderr
    assert all(s["action"] == "up_to_date" for s in result.json()["stages"])  # planned before
    got, fast = run(built, "--json")
    assert not fast, edit  # the stamp of the hooked build does not hold
    assert got.code == 0, got.stderr
    got, fast = run(built, "status", "--json")
    assert not fast
    same(got, full(built, "status", "--json"))


@pytest.mark.parametrize("when", ["after_probe", "before_stamp"])
def test_dd_builds_own_file_changed_during_a_command_is_not_stamped(
        built: Project, compiled_package: Path, tmp_path: Path, when: str) -> None:
    """dd-build's own package changed while a command runs (an upgrade, an editable install
    checked out), each kind of OWN_EDITS on a fresh copy of the package: the stamp it stores,
    if any, must not answer the next command (the code that printed is not the code the
    stats describe); what the next command says is what the new code's full path says. The
    control (nothing changed) is answered from the stamp."""
    failed = []
    for i, edit in enumerate(["nothing", *OWN_EDITS]):
        env = own_copy(built, compiled_package, tmp_path / f"checkout{i}")
        result = hooked(built, when, edit, env=env)
        assert result.code == 0, (edit, result.stderr)
        got, fast = run(built, env=env)
        if edit == "nothing":
            assert fast, "the control was not answered from the stamp"
            same(got, result)
            continue
        want = full_with(built, env)
        if fast or (got.code, got.stdout, got.stderr) != (want.code, want.stdout, want.stderr):
            failed.append(f"{edit}: answered from the stamp: {fast}\n  got:  {got.stdout}"
                          f"\n  want: {want.stdout}")
        if edit in ("dd-build's module edited", "dd-build's module shadowed by a new package"):
            assert ": up to date" not in want.stdout, want.stdout  # the new code's wording
    assert not failed, "\n".join(failed)


def test_dd_builds_own_file_changed_between_commands_is_not_stamped(
        built: Project, compiled_package: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of edit of dd-build's own package the stamp fuzzer draws (own_edits.KINDS),
    made between two commands on a fresh copy of the package, after the first was answered
    from the stamp: the next is not, and says what the new code's full path says."""
    import random

    import own_edits

    failed = []
    for i, kind in enumerate(own_edits.KINDS):
        folder = tmp_path / f"between{i}"
        env = own_copy(built, compiled_package, folder)
        monkeypatch.setenv("DD_OWN_COPY", str(folder))  # own_edits.edit's guard
        for args in ((), ("status",)):
            run(built, *args, env=env)
        assert run(built, "status", env=env)[1], kind  # the stamp holds
        package = folder / "buildtool"
        if kind == "removed":
            own_edits.edit(package, "added", random.Random(i))
            for args in (("status",), ("status",)):
                run(built, *args, env=env)
            assert run(built, "status", env=env)[1], kind
        assert own_edits.edit(package, kind, random.Random(i)), kind
        got, fast = run(built, "status", env=env)
        want = full_with(built, env, "status")
        if fast or (got.code, got.stdout, got.stderr) != (want.code, want.stdout, want.stderr):
            failed.append(f"{kind}: answered from the stamp: {fast}")
    assert not failed, failed


@pytest.mark.parametrize("edit", ["code edited", "input replaced, same size and mtime",
                                  "batch file replaced, same size and mtime",
                                  "record touched back", "output edited, same size and mtime",
                                  "a file the glob matches added"])
def test_a_file_changed_during_status_is_not_stamped_as_unchanged(built: Project, edit: str
                                                                   ) -> None:
    want = full(built, "status", "--json")  # what the files said before
    result = hooked(built, "after_probe", edit, "status", "--json")
    same(result, want)  # planned before the edit
    got, fast = run(built, "status", "--json")
    assert not fast, edit
    same(got, full(built, "status", "--json"))


def test_a_content_change_during_a_null_build_is_built_next(built: Project) -> None:
    """What the stamp does not answer, the full path sees: the edited input's stage runs."""
    hooked(built, "after_probe", "input edited", "--json")
    got, fast = run(built, "--json")
    assert not fast
    assert {s["stage"]: s["action"] for s in got.json()["stages"]}["d"] == "run"


def test_the_outputs_a_stage_wrote_are_stamped_as_written(built: Project) -> None:
    """A build in which a stage ran stores no stamp (its probe saw the files before they were
    written); the next null build stamps the files as the stage left them."""
    built.write("code/report.py", REPORT + "\n# edited\n")  # r runs again
    before = [p.read_bytes() for p in stamps(built)]
    got, fast = run(built, "--json")
    assert not fast and got.code == 0
    assert {s["stage"]: s["action"] for s in got.json()["stages"]}["r"] == "run"
    assert [p.read_bytes() for p in stamps(built)] == before  # not stored after a run
    settled_code(built, "code/report.py")
    first, fast = run(built, "--json")  # the full path: stores the stamp
    assert not fast and all(s["action"] == "up_to_date" for s in first.json()["stages"])
    again, fast = run(built, "--json")
    assert fast
    same(again, first)
    report = built.root / "out" / "report.txt"
    st = report.stat()
    report.write_bytes(report.read_bytes()[:-1] + b"?")  # same size, mtime put back
    os.utime(report, ns=(st.st_atime_ns, st.st_mtime_ns))
    got, fast = run(built, "status", "--json")
    assert not fast  # (the full path trusts size and mtime: up to date, as it says)
    same(got, full(built, "status", "--json"))
    report.write_text("edited\n")
    got, fast = run(built, "--json")
    assert not fast
    assert {s["stage"]: s["action"] for s in got.json()["stages"]}["r"] == "run"


def test_a_run_stages_command_changing_an_input_is_not_stamped(built: Project) -> None:
    """A stage's command that changes another stage's input, in a build in which that stage
    was already found up to date: that build stores no stamp, the next command sees the
    change."""
    before = [p.read_bytes() for p in stamps(built)]
    result = built.run("--json", "--force", "r", EDIT_SEED="1")
    assert result.code == 0, result.stderr
    assert {s["stage"]: s["action"] for s in result.json()["stages"]}["d"] == "up_to_date"
    assert [p.read_bytes() for p in stamps(built)] == before
    got, fast = run(built, "status", "--json")
    assert not fast and not up_to_date(got)["d"]
    same(got, full(built, "status", "--json"))


def settled_code(project: Project, rel: str) -> None:
    """settled() for another code file than code/stages.py."""
    import time

    from buildtool.loadfacts import RACY_NS

    st = (project.root / rel).stat()
    wait = max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS - time.time_ns()
    if wait > 0:
        time.sleep(wait / 1e9 + 0.05)
    assert project.run("status").code == 0


# ---------------------------------------------------------------- in-process


def _stamp_state(project: Project) -> tuple:
    """nullstamp.collect of a `status` planning of `project`, in this process."""
    from buildtool import compiled, execute, nullstamp

    cwd = os.getcwd()
    os.chdir(project.root)
    execute.after_build = lambda prep, report: None  # someone listens: the stats are kept
    try:
        workflow = compiled.load((project.root / "Workflowfile").resolve(), "Workflowfile",
                                 store=False)
        prep = execute.prepare(workflow, execute.BuildConfig(dry_run=True))
        state = nullstamp.collect(prep, None)
    finally:
        execute.after_build = None
        os.chdir(cwd)
    assert state is not None
    return state


def _stamped_files(state: tuple) -> dict[str, tuple[int, ...]]:
    """Each file in the stamp's groups, by full path, with its stats as stored."""
    from array import array

    files = {}
    for folder, names, packed in state[4]:
        stats = array("q", packed).tolist()
        assert len(stats) == 5 * len(names)
        for i, name in enumerate(names):
            files[os.path.join(folder, name) if folder else name] = tuple(stats[5 * i:5 * i + 5])
    return files


def _read_by_decisions(project: Project) -> set[str]:
    """Every file a decision reads the stats of, from the records: each record file, batch
    file, output and step file, code file, input and imported project module."""
    from buildtool.external import is_external_key

    root, artifacts = project.root, project.artifacts
    files: set[str] = set()
    for stage in "abcder":
        record = json.loads((artifacts / stage / "stage.json").read_text())
        files.add(str(artifacts / stage / "stage.json"))
        files |= {str(artifacts / b["file"]) for b in record["batches"]}
        outputs = [record["output"]] if record.get("output") else []
        for output in outputs + list((record.get("steps") or {}).values()):
            files |= {str(root / f["path"]) for f in output.get("files") or []}
        named = [record["code"], record["discovered"], record["inputs"].get("files") or {}]
        files |= {str(root / rel) for states in named for rel in states
                  if not is_external_key(rel)}  # (code outside: asked, not stat'ed)
    return files


def test_the_stamp_holds_every_file_a_decision_read_with_its_stats(built: Project) -> None:
    files = _stamped_files(_stamp_state(built))
    assert set(files) == _read_by_decisions(built)
    for rel in ("out/more.txt", "helpers/text.py", "data/one.jsonl", "code/words.py"):
        assert str(built.root / rel) in files  # (the records list what they should)
    for path, stats in files.items():
        st = os.stat(path)
        assert stats == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev), path


def test_the_stamp_holds_the_stats_the_probe_took_not_later_ones(built: Project) -> None:
    """A file changed after the probe: the stamp still holds its stats from before."""
    from buildtool import probe as probing

    seed = built.root / "data" / "seed.csv"
    before = os.stat(seed)
    planned = probing.probe

    def probe(*args: object, **kwargs: object) -> object:
        facts = planned(*args, **kwargs)  # type: ignore[arg-type]
        seed.write_text("id,v\n1,3,4\n")
        return facts

    probing.probe = probe  # type: ignore[assignment]
    from buildtool import execute

    execute.probe = probe  # type: ignore[assignment]
    try:
        files = _stamped_files(_stamp_state(built))
    finally:
        probing.probe = planned
        execute.probe = planned
    assert files[str(seed)] == (before.st_size, before.st_mtime_ns, before.st_ctime_ns,
                                before.st_ino, before.st_dev)
    assert files[str(seed)][:3] != (os.stat(seed).st_size, os.stat(seed).st_mtime_ns,
                                    os.stat(seed).st_ctime_ns)
