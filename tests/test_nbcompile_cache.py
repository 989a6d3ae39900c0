"""The compiled workflow (buildtool/compiled.py), through the real CLI: an unchanged
Workflowfile is read without YAML or networkx, and the cache is never trusted over the files.

Whether a command hit the cache is seen in what it imported (`-X importtime`: a hit imports
neither yaml nor networkx). Each test changes one input of the last full reading and checks
that the change is seen exactly as a run with no cache sees it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHAIN, Project, Result

from buildtool.compiled import FORMAT

COMPILED = Path("artifacts/.compiled")


def run(project: Project, *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> tuple[Result, bool]:
    """The CLI's result (stderr without the import lines), and whether the Workflowfile was
    read from the cache (nothing imported YAML)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=cwd or project.root, env={**project.env(), **(env or {})},
                          capture_output=True, text=True, timeout=300)
    imports = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[1].strip() for line in imports}
    stderr = "".join(line + "\n" for line in proc.stderr.splitlines()
                     if not line.startswith("import time:"))
    hit = "yaml" not in names and not any(n.startswith("yaml.") for n in names)
    assert "networkx" not in names or not hit, "a hit computes no graph"
    return Result(proc.returncode, proc.stdout, stderr), hit


def cold(project: Project, *args: str) -> Result:
    """The same command with no compiled workflow to read (as before there was a cache)."""
    shutil.rmtree(project.root / COMPILED, ignore_errors=True)
    result, hit = run(project, *args)
    assert not hit
    return result


def warm(project: Project) -> None:
    """Build, then store the compiled workflow (the first build makes the artifacts folder;
    the command after it stores), so that the next command hits."""
    assert project.run().code == 0
    assert project.run("status").code == 0
    assert list((project.root / COMPILED).glob("*.bin"))


def entries(project: Project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (project.root / COMPILED).glob("*.bin")}


def same_as_cold(project: Project, *args: str) -> Result:
    """Run `args` from the cache and with none; both say the same. The cache's entry is left
    as the cold run stored it."""
    result, hit = run(project, *args)
    assert hit, result.stderr
    assert cold(project, *args) == result
    return result


def test_an_unchanged_workflowfile_is_read_without_yaml_or_networkx(project: Project) -> None:
    assert project.run().code == 0
    first, hit = run(project, "-q")  # the artifacts folder is there now: stored
    assert first.code == 0 and not hit
    again, hit = run(project, "-q")
    assert again.code == 0 and hit
    for args in (("--json",), ("-n", "--explain"), ("status", "--json"), ("dag", "--json"),
                 ("dag", "--format", "mermaid"), ("-n", "--json", "b"),
                 ("-n", "--json", "--rerun-from", "a"), ("-n", "--json", "--force", "b", "c"),
                 ("show", "a", "-n", "3"), ("-n", "nope"), ("-n", "--force", "nope")):
        result = same_as_cold(project, *args)
        assert "Traceback" not in result.stderr, args
        run(project, "status")  # store it again for the next command


def test_a_workflowfile_replaced_by_one_of_the_same_size_in_the_same_second(
        project: Project) -> None:
    warm(project)
    wf = project.root / "Workflowfile"
    before = wf.stat()
    text = wf.read_text()
    assert "num_records: 20" in text
    edited = text.replace("num_records: 20", "num_records: 30")
    assert len(edited) == len(text)
    wf.write_text(edited)
    os.utime(wf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (wf.stat().st_size, wf.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    result, hit = run(project, "-n", "--json")
    assert not hit
    a = next(s for s in result.json()["stages"] if s["stage"] == "a")
    assert a["action"] == "grow" and a["reasons"][0]["key"] == "num_records"  # 20 -> 30 rows


def test_a_replaced_workflowfile_naming_a_vanished_function_is_refused(
        project: Project) -> None:
    warm(project)
    wf = project.root / "Workflowfile"
    before = wf.stat()
    edited = wf.read_text().replace("code/stages.py:rows", "code/stages.py:rowz", 1)
    wf.write_text(edited)
    os.utime(wf, ns=(before.st_atime_ns, before.st_mtime_ns))
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "defines no function `rowz`" in result.stderr
    assert result == cold(project, "-n")


@pytest.mark.parametrize("keep_stat", [False, True], ids=["edited", "edited-same-stat"])
def test_a_code_file_whose_function_vanished_is_caught_at_load(project: Project,
                                                               keep_stat: bool) -> None:
    warm(project)
    code = project.root / "code" / "stages.py"
    before = code.stat()
    text = code.read_text()
    edited = text.replace("def join(ctx):", "def joim(ctx):")
    assert len(edited) == len(text)
    code.write_text(edited)
    if keep_stat:  # same size, same mtime: only the ctime (and the content) tell
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "`code/stages.py` defines no function `join`" in result.stderr
    assert "did you mean `joim`?" in result.stderr
    assert result == cold(project, "-n")
    code.write_text(text)
    assert run(project, "-n")[0].code == 0


def test_an_edit_that_keeps_the_function_is_a_miss_then_a_hit(project: Project) -> None:
    warm(project)
    code = project.root / "code" / "stages.py"
    code.write_text(code.read_text() + "\n# a comment\n")
    result, hit = run(project, "-n", "--json")
    assert result.code == 0 and not hit
    assert {s["stage"]: s["action"] for s in result.json()["stages"]} == \
        {"a": "run", "b": "run", "c": "run"}
    again, hit = run(project, "-n", "--json")
    assert not hit  # a dry run writes nothing: the entry is still the old one
    run(project, "status")
    again, hit = run(project, "-n", "--json")
    assert hit and again == result


PACKAGE = CHAIN.replace("transform: code/stages.py:join", "transform: mods.stages:join")


def test_a_package_that_appears_before_the_module_file(project: Project) -> None:
    """`mods.stages:join` is mods/stages.py until mods/stages/__init__.py appears: Python
    would import the package, which defines no `join`."""
    project.write("Workflowfile", PACKAGE)
    project.write("mods/__init__.py", "")
    project.write("mods/stages.py", (project.root / "code" / "stages.py").read_text())
    warm(project)
    package = project.write("mods/stages/__init__.py", "def rows(ctx):\n    return []\n")
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "defines no function `join`" in result.stderr
    assert result == cold(project, "-n")
    package.unlink()
    package.parent.rmdir()
    assert run(project, "-n")[0].code == 0


SEED_FOLDER = CHAIN + """  d:
    generate: code/stages.py:rows
    seed: data/rows.v1
"""


def test_a_folder_the_load_looked_for_disappearing_and_appearing(project: Project) -> None:
    """A seed path without a data extension is accepted only as a folder (of .parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    project.write("Workflowfile", SEED_FOLDER.replace("rows.v1", "rows.txt"))
    (project.root / "data" / "rows.txt").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2]}), project.root / "data/rows.txt/part.parquet")
    warm(project)
    shutil.rmtree(project.root / "data" / "rows.txt")
    (project.root / "data" / "rows.txt").write_text("not a folder\n")
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "a seed file must be .parquet, .csv or .jsonl" in result.stderr
    assert result == cold(project, "-n")
    (project.root / "data" / "rows.txt").unlink()
    (project.root / "data" / "rows.txt").mkdir()
    pq.write_table(pa.table({"id": [1, 2]}), project.root / "data/rows.txt/part.parquet")
    assert run(project, "-n")[0].code == 0


def test_an_input_file_disappearing_and_appearing(project: Project) -> None:
    project.write("Workflowfile", CHAIN + "    code: [prompts/p.txt]\n")
    project.write("prompts/p.txt", "hello\n")
    warm(project)
    (project.root / "prompts" / "p.txt").unlink()
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "no file `prompts/p.txt` for `code`" in result.stderr
    assert result == cold(project, "-n")
    project.write("prompts/p.txt", "hello\n")
    result, hit = run(project, "-n", "--json")
    assert result.code == 0


def test_an_artifacts_path_that_becomes_a_file(project: Project) -> None:
    project.write("Workflowfile", "artifacts: out\n" + CHAIN)
    assert project.run().code == 0
    assert project.run("status").code == 0
    assert list((project.root / "out" / ".compiled").glob("*.bin"))
    assert not (project.root / "artifacts").exists()
    assert run(project, "-n")[1]
    shutil.rmtree(project.root / "out")
    (project.root / "out").write_text("a file\n")
    result, hit = run(project, "-n")
    assert not hit and result.code == 2
    assert "`out` is a file, not a folder" in result.stderr


@pytest.mark.parametrize("damage", ["truncated", "garbled", "format", "junk", "empty",
                                    "folder", "header"])
def test_a_torn_garbled_or_other_format_entry_is_a_miss_and_is_rewritten(
        project: Project, damage: str) -> None:
    warm(project)
    (name, good), = entries(project).items()
    path = project.root / COMPILED / name
    if damage == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes({
            "truncated": good[:len(good) // 2],
            "garbled": good[:-40] + bytes(b ^ 0x5A for b in good[-40:]),
            "format": good.replace(b"workflow\n" + FORMAT.to_bytes(4, "little"),
                                   b"workflow\n" + (FORMAT + 5).to_bytes(4, "little"), 1),
            "junk": b"\x80\x04not a cache at all" * 20,
            "empty": b"",
            # a valid file whose header is not what this dd-build writes
            "header": _with_header(good, (1, 2, 3)),
        }[damage])
    result, hit = run(project, "--json")
    assert result.code == 0 and not hit, result.stderr
    assert {s["result"] for s in result.json()["stages"]} == {"up_to_date"}
    if damage != "folder":
        assert set(entries(project)) == {name}  # rewritten: the next command hits
        assert run(project, "-q")[1]


def _with_header(good: bytes, header: tuple[int, ...]) -> bytes:
    import marshal
    import zlib

    from buildtool import compiled

    start = len(compiled._MAGIC) + 8
    size = int.from_bytes(good[start:start + 8], "little")
    head = marshal.dumps(header)
    body = len(head).to_bytes(8, "little") + head + good[start + 8 + size:]
    return good[:start - 4] + zlib.crc32(body).to_bytes(4, "little") + body


def test_another_dd_build_version_is_a_miss(project: Project, tmp_path: Path) -> None:
    """An upgrade seen as a change of `buildtool.__version__` alone: a sitecustomize on the
    path of every run sets it when NEW_VERSION is set (so PYTHONPATH, also in the key, stays)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('NEW_VERSION'):\n"
        "    import buildtool\n"
        "    buildtool.__version__ = os.environ['NEW_VERSION']\n")
    path = {"PYTHONPATH": f"{hook}{os.pathsep}{project.env()['PYTHONPATH']}"}
    upgraded = {**path, "NEW_VERSION": "9.9.9"}
    assert run(project, "--version", env=upgraded)[0].stdout == "dd-build 9.9.9\n"
    assert project.run().code == 0
    assert not run(project, "-q", env=path)[1]
    assert run(project, "-q", env=path)[1]
    result, hit = run(project, "--json", env=upgraded)
    assert result.code == 0 and not hit
    assert {s["result"] for s in result.json()["stages"]} == {"up_to_date"}
    assert run(project, "-q", env=upgraded)[1]  # stored for 9.9.9
    assert not run(project, "-q", env=path)[1]  # and back


def test_an_edited_dd_build_module_is_a_miss(project: Project, tmp_path: Path) -> None:
    """The same version with other code (a checkout, an editable install): dd-build's own
    files are part of the key."""
    from conftest import REPO

    copy = tmp_path / "dd-build"
    shutil.copytree(REPO / "buildtool", copy / "buildtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(copy)}
    assert project.run().code == 0
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]
    rules = copy / "buildtool" / "claims.py"  # a module only the full reading imports
    rules.write_text(rules.read_text() + "\n# edited\n")
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]
    assert not run(project, "-q")[1]  # the tree under test is another dd-build: its own key


def _own_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of dd-build's package with its bytecode (own_edits.copy_package), and the
    environment of a CLI that runs it: its files may be edited, never the real package's."""
    import own_edits
    from conftest import REPO

    package = own_edits.copy_package(REPO, tmp_path / "dd-build")
    return package, {"PYTHONPATH": str(package.parent)}


# A package `claims/` in dd-build, found before claims.py (which the reading uses): the same
# code, but it refuses every Workflowfile.
REFUSING_CLAIMS = """
def _refuse(self, source, workflowfile, artifacts):
    return [WorkflowError("refused by the claims/ package added to dd-build")]


Claims.check = _refuse
"""


def test_a_package_added_to_dd_build_before_a_module_the_reading_used(
        project: Project, tmp_path: Path) -> None:
    """dd-build's own modules keep their stats when a package of the same name is added
    beside one (the package is imported instead): only the package folder's stats say so.
    The next command reads the Workflowfile with the new code, which refuses it, as a run
    with no compiled workflow does (the null-build stamp, which keys the folders too, does
    not answer either)."""
    package, env = _own_copy(tmp_path)
    assert project.run().code == 0
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]
    claims = package / "claims.py"
    (package / "claims").mkdir()
    (package / "claims" / "__init__.py").write_text(
        claims.read_text().replace("from .", "from ..") + REFUSING_CLAIMS)
    result, hit = run(project, "-q", env=env)
    assert result.code == 2 and "refused by the claims/ package" in result.stderr, result
    assert not hit


def test_a_module_added_to_or_removed_from_dd_build_is_a_miss(
        project: Project, tmp_path: Path) -> None:
    """An added or removed module changes only its folder's stats (here a subfolder of the
    package): a miss, then a hit for the new code."""
    package, env = _own_copy(tmp_path)
    assert project.run().code == 0
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]
    added = package / "kinds" / "added.py"
    added.write_text("ADDED = 1\n")
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]
    added.unlink()
    assert not run(project, "-q", env=env)[1]
    assert run(project, "-q", env=env)[1]


def test_an_error_raised_after_a_hit_names_file_line_stage_and_key(project: Project) -> None:
    """What the load cannot check (a `code:` glob matches files when the stage is planned)
    fails after a hit, pointing into the Workflowfile as a cold run does."""
    project.write("lib/a.py", "X = 1\n")
    project.write("Workflowfile", CHAIN.replace("    params: {tag: x}\n",
                                                "    params: {tag: x}\n    code: ['lib/*.py']\n"))
    warm(project)
    (project.root / "lib" / "a.py").unlink()
    result, hit = run(project, "--json")
    assert hit and result.code == 2
    error = result.json()["error"]
    assert (error["file"], error["line"], error["column"], error["stage"], error["key"]) == \
        ("Workflowfile", 9, 11, "a", "code")
    assert "Workflowfile:9:11, stage 'a', key 'code'" in result.stderr
    assert cold(project, "--json") == result


def test_a_display_name_of_its_own(project: Project) -> None:
    """`-f ./Workflowfile` names the file so in messages: an entry of its own."""
    project.write("lib/a.py", "X = 1\n")
    project.write("Workflowfile", CHAIN.replace("    params: {tag: x}\n",
                                                "    params: {tag: x}\n    code: ['lib/*.py']\n"))
    warm(project)
    assert not run(project, "-f", "./Workflowfile", "-q")[1]
    assert run(project, "-f", "./Workflowfile", "-q")[1]
    assert len(entries(project)) == 2
    (project.root / "lib" / "a.py").unlink()
    assert "./Workflowfile:9:11, stage 'a'" in run(project, "-f", "./Workflowfile")[0].stderr
    assert "\nWorkflowfile:9:11, stage 'a'" in "\n" + run(project)[0].stderr


def test_found_from_a_subfolder_and_through_a_symlink(project: Project, tmp_path: Path) -> None:
    warm(project)
    sub = project.root / "code"
    result, hit = run(project, "-n", "--json", cwd=sub)
    assert hit and result.code == 0
    link = tmp_path / "link"
    link.symlink_to(project.root)
    result, hit = run(project, "-n", "--json", cwd=link)
    assert hit and result.code == 0


def test_a_symlinked_workflowfile_pointed_elsewhere(project: Project) -> None:
    (project.root / "Workflowfile").rename(project.root / "one.yaml")
    project.write("two.yaml", CHAIN.replace("num_records: 20", "num_records: 40"))
    (project.root / "Workflowfile").symlink_to("one.yaml")
    warm(project)
    assert run(project, "-q")[1]
    (project.root / "Workflowfile").unlink()
    (project.root / "Workflowfile").symlink_to("two.yaml")
    result, hit = run(project, "-n", "--json")
    assert not hit
    a = next(s for s in result.json()["stages"] if s["stage"] == "a")
    assert a["reasons"][0]["key"] == "num_records"


def test_a_dry_run_and_a_missing_artifacts_folder_write_no_cache(project: Project) -> None:
    for args in (("-n",), ("status",), ("dag",), ("-n", "--json")):
        assert run(project, *args)[0].code == 0
        assert not (project.root / "artifacts").exists(), args  # not made for the cache
    assert project.run().code == 0
    assert run(project, "-n")[0].code == 0
    assert not (project.root / COMPILED).exists()  # a dry run writes nothing
    assert run(project, "clean", "-n", "--all")[0].code == 0
    assert not (project.root / COMPILED).exists()
    assert run(project, "status")[0].code == 0
    assert (project.root / COMPILED).is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_artifacts_folder_is_no_cache_and_no_error(project: Project) -> None:
    assert project.run().code == 0
    art = project.root / "artifacts"
    art.chmod(0o555)
    try:
        result, hit = run(project, "status", "--json")
        assert result.code == 0 and not hit
        assert not (art / ".compiled").exists()
    finally:
        art.chmod(0o755)


def test_an_unwritable_cache_folder_is_no_error(project: Project) -> None:
    """(Also as root:) a cache folder that is a file cannot hold entries."""
    assert project.run().code == 0
    (project.root / COMPILED).write_text("in the way\n")
    for _ in range(2):
        result, hit = run(project, "--json")
        assert result.code == 0 and not hit
        assert {s["result"] for s in result.json()["stages"]} == {"up_to_date"}


def test_clean_all_removes_it(project: Project) -> None:
    warm(project)
    assert run(project, "clean", "b")[0].code == 0
    assert entries(project)  # one stage's artifacts: the compiled workflow stays
    assert run(project, "clean", "--all")[0].code == 0
    assert not (project.root / COMPILED).exists()
    assert run(project, "clean", "--all")[0].code == 0  # stored again, removed again
    assert not (project.root / COMPILED).exists()


UNREAD = "workflow: demo\nartifacts: &art artifacts\n" + CHAIN.split("workflow: demo\n", 1)[1]


def test_an_artifacts_line_it_cannot_read_means_no_cache(project: Project) -> None:
    project.write("Workflowfile", UNREAD)
    assert project.run().code == 0
    for _ in range(2):
        result, hit = run(project, "--json")
        assert result.code == 0 and not hit
    assert not (project.root / COMPILED).exists()


def test_the_api_reads_it_too(project: Project) -> None:
    code = ("import sys, buildtool\n"
            "r = buildtool.build(sys.argv[1])\n"
            "print(r.ok, 'yaml' in sys.modules, 'networkx' in sys.modules)\n")
    assert project.run().code == 0
    outs = [subprocess.run([sys.executable, "-c", code, str(project.root)], env=project.env(),
                           capture_output=True, text=True, timeout=300).stdout
            for _ in range(2)]
    assert outs == ["True True True\n", "True False False\n"]


# Run by a Python of the copy's package: a change to the package between loading dd-build and
# storing the compiled workflow, then whether it was stored.
STORE_AFTER = """
import os, sys
from pathlib import Path
import buildtool
from buildtool import compiled
package, project, change = Path(buildtool.__file__).parent, Path(sys.argv[1]), sys.argv[2]
if change == "bytecode folder":  # what Python does on a fresh checkout's first imports
    (package / "kinds" / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__").mkdir(exist_ok=True)
elif change == "editor file":  # no code either: an editor's swap file beside a module
    (package / ".claims.py.swp").write_bytes(b"x")
elif change == "module added":
    (package / "kinds" / "added_meanwhile.py").write_text("X = 1\\n")
compiled.load(project / "Workflowfile", "Workflowfile")
print(package)
print(len(list((project / "artifacts" / compiled.FOLDER).glob("*.bin"))))
"""


@pytest.mark.parametrize("change, stored", [("none", 1), ("bytecode folder", 1),
                                            ("editor file", 1), ("module added", 0)])
def test_a_folder_changed_by_bytecode_while_dd_build_runs_still_stores(
        project: Project, tmp_path: Path, change: str, stored: int) -> None:
    """A long-lived process (a test run, a notebook) stores its readings though Python added a
    `__pycache__` to dd-build's package meanwhile (the folder's ctime moved: it changed no
    code; CI's fresh clone never stored one in its pytest process); a module added meanwhile
    still means not storing (what read may not be the code now there)."""
    package, env = _own_copy(tmp_path)
    for cache in package.rglob("__pycache__"):
        shutil.rmtree(cache)
    shutil.rmtree(project.root / "artifacts", ignore_errors=True)
    (project.root / "artifacts").mkdir()
    proc = subprocess.run([sys.executable, "-c", STORE_AFTER, str(project.root), change],
                          env={**project.env(), **env, "PYTHONDONTWRITEBYTECODE": "1"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(package), str(stored)], proc
