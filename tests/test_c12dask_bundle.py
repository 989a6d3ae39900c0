"""Stage code on a Dask worker runs from the client's bundle of the project's sources
(buildtool/codebundle.py, buildtool/kinds/bundleload.py), never from the worker's disk or its
module cache. These drive the worker's side directly, in a fresh Python each (its sys.modules
and import hooks are what is tested), with a project folder that does not exist there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

from buildtool.codebundle import collect

ROOT = "/nonexistent/dd-build-project"  # the client's path: nothing is there on the "worker"

DRIVER = '''
import json, sys, threading, traceback
from buildtool.codebundle import CodeBundle
from buildtool.fingerprint import FileState, digest_bytes
from buildtool.kinds.bundleload import imports_for, running

def bundle(files, root=%(root)r):
    files = {k: v.encode() for k, v in files.items()}
    states = {k: FileState(k, len(v), 1, digest_bytes(v)) for k, v in files.items()}
    return CodeBundle(root, files, states, digest_bytes(repr(sorted(files.items())).encode()))

def call(b, target, *args):
    with running(b) as code:
        return code.callable(target, "s")(*args)

out = {}
%(body)s
print(json.dumps(out))
'''


def drive(body: str) -> dict:
    """Run `body` in a fresh Python beside DRIVER's helpers; what it put in `out`."""
    code = DRIVER % {"root": ROOT, "body": textwrap.dedent(body)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_lazy_import_runs_the_bundles_module_and_is_handed_back_as_an_edge() -> None:
    out = drive('''
        files = {"code/__init__.py": "", "code/helper.py": "VALUE = 1\\n",
                 "code/gen.py": "def rows(ctx):\\n    from code import helper\\n    return helper.VALUE\\n"}
        out["value"] = call(bundle(files), "code/gen.py:rows", None)
        edges, nodes = imports_for("build-1")
        out["edges"] = edges
        out["nodes"] = {n: [k, s.digest] for n, k, s, m in nodes}
        out["again"] = imports_for("build-1")  # nothing new for that build
        out["other"] = sorted(imports_for("build-2")[0])  # another build is told again
        ''')
    assert out["value"] == 1  # the stdlib `code` module is shadowed, as on the client
    assert ["code/gen.py", "code/helper.py"] in out["edges"]
    assert out["nodes"]["code/helper.py"][1].startswith("sha256:")
    assert out["again"] is None
    assert ["code/gen.py", "code/helper.py"] in out["other"]


def test_a_new_bundle_drops_the_old_modules_a_worker_imported() -> None:
    """A long-lived worker: the edited helper runs, not the one it imported for the last
    build (the stale-output hole of a worker's module cache)."""
    out = drive('''
        gen = "import helper\\ndef rows(ctx):\\n    import helper2\\n    return helper.V + helper2.W\\n"
        one = bundle({"gen.py": gen, "helper.py": "V = 1\\n", "helper2.py": "W = 10\\n"})
        two = bundle({"gen.py": gen, "helper.py": "V = 2\\n", "helper2.py": "W = 20\\n"})
        out["values"] = [call(one, "gen.py:rows", None), call(two, "gen.py:rows", None),
                         call(one, "gen.py:rows", None)]
        ''')
    assert out["values"] == [11, 22, 11]


def test_a_failure_names_the_clients_file_and_line_with_its_source() -> None:
    out = drive('''
        from pathlib import Path
        from buildtool.usertrace import where, user_traceback
        files = {"stages/bad.py": "import json\\n\\ndef make(ctx):\\n    return json.loads('{')\\n"}
        try:
            call(bundle(files), "stages/bad.py:make", None)
        except Exception as exc:
            out["where"] = str(where(exc, Path(ROOT)))
            out["trace"] = user_traceback(exc)
        '''.replace("ROOT", repr(ROOT)))
    assert out["where"].startswith("at stages/bad.py:4 in make"), out
    assert "return json.loads('{')" in out["trace"]  # the line's text, though no file is here


def test_packages_relative_imports_namespaces_and_dataclasses_load_as_python_does() -> None:
    out = drive('''
        files = {
            "pkg/__init__.py": "from .sub import twice\\n",
            "pkg/sub.py": "def twice(x):\\n    return 2 * x\\n",
            "ns/part.py": "from __future__ import annotations\\nimport dataclasses\\n"
                          "@dataclasses.dataclass\\nclass P:\\n    x: int\\n",
            "run.py": "import pkg\\nfrom ns.part import P\\n"
                      "def go(ctx):\\n    return pkg.twice(P(3).x)\\n"
                      "def where(ctx):\\n    import pkg.sub\\n    return pkg.sub.__file__\\n",
        }
        b = bundle(files)
        out["value"] = call(b, "run.py:go", None)
        out["dotted"] = call(b, "pkg.sub:twice", 5)  # a `module:fn` target of the project
        out["file"] = call(b, "run.py:where", None)
        # a stage's file imported by its module name too: one module, executed once
        c = bundle({"count.py": "import itertools\\nN = itertools.count()\\nFIRST = next(N)\\n"
                                "def f(ctx):\\n    import count\\n    return [FIRST, count.FIRST, next(N)]\\n"
                                "def name(ctx):\\n    import count\\n    return count.__spec__.name\\n"})
        out["once"] = [call(c, "count.py:f", None), call(c, "count.py:f", None)]
        out["name"] = call(c, "count.py:name", None)
        ''')
    assert out["value"] == 6 and out["dotted"] == 10
    assert out["file"] == f"{ROOT}/pkg/sub.py"
    assert out["once"] == [[0, 0, 1], [0, 0, 2]]
    assert out["name"].startswith("ddbuild_user_")  # as first executed


def test_a_module_missing_everywhere_says_to_install_it_on_the_workers() -> None:
    out = drive('''
        from buildtool.errors import StageFailed
        try:
            call(bundle({"g.py": "import not_installed_anywhere\\ndef f(ctx):\\n    return 1\\n"}),
                 "g.py:f", None)
        except StageFailed as exc:
            out["message"], out["hint"] = exc.message, exc.hint
        ''')
    assert "cannot load g.py on the Dask worker" in out["message"]
    assert "not_installed_anywhere" in out["hint"] and "worker" in out["hint"]


def test_tasks_of_another_bundle_wait_until_the_running_ones_are_done() -> None:
    """One bundle's modules in sys.modules at a time: a task of a second bundle starts only
    once the first bundle's running task has ended, then sees its own code."""
    out = drive('''
        one = bundle({"m.py": "V = 1\\ndef f(ctx):\\n    return V\\n"})
        two = bundle({"m.py": "V = 2\\ndef f(ctx):\\n    return V\\n"})
        inside, release, order = threading.Event(), threading.Event(), []

        def first():
            with running(one) as code:
                inside.set()
                release.wait(10)
                order.append(("one", code.callable("m.py:f", "s")(None)))

        def second():
            inside.wait(10)
            with running(two) as code:
                order.append(("two", code.callable("m.py:f", "s")(None)))

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        inside.wait(10)
        threads[1].join(0.5)  # it must still be waiting
        out["second_waited"] = threads[1].is_alive()
        release.set()
        for t in threads:
            t.join(10)
        out["order"] = order
        ''')
    assert out["second_waited"] is True
    assert out["order"] == [["one", 1], ["two", 2]]


def test_the_bundle_holds_the_projects_python_files_and_skips_the_rest(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "gen.py").write_text("X = 1\n")
    (tmp_path / "top.py").write_text("")
    (tmp_path / "notes.txt").write_text("not code")
    for skipped in ("artifacts/demo", ".git", "code/__pycache__", "venv", "node_modules"):
        (tmp_path / skipped).mkdir(parents=True)
        (tmp_path / skipped / "x.py").write_text("")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    bundle = collect(tmp_path, skip=(tmp_path / "artifacts",))
    assert sorted(bundle.files) == ["code/gen.py", "top.py"]
    assert bundle.states["code/gen.py"].size == 6
    assert collect(tmp_path, skip=(tmp_path / "artifacts",)).digest == bundle.digest
    (tmp_path / "code" / "gen.py").write_text("X = 2\n")
    assert collect(tmp_path).digest != bundle.digest
    # the same sources in another folder are other code (their __file__ is another path)
    twin = tmp_path / "twin"
    (twin / "code").mkdir(parents=True)
    (twin / "code" / "gen.py").write_text("X = 2\n")
    (twin / "top.py").write_text("")
    alone = collect(tmp_path, skip=(tmp_path / "artifacts", twin))
    assert alone.files == collect(twin).files and alone.digest != collect(twin).digest
    assert json.dumps(sorted(bundle.folders())) == '["", "code"]'


def test_a_relative_path_stage_code_cannot_open_on_a_worker_is_said_as_such() -> None:
    """On a worker the working folder is the worker's, not the project's (found by a trial)."""
    from buildtool.batchexec import StageCall
    from buildtool.daskwork import _remote_error
    from buildtool.errors import UserCodeFailed

    call = StageCall("s", "code/g.py:make", ROOT, {}, {}, 1, 0, 0.0)
    for name, said in (("prompts/rubric.txt", True), ("/abs/rubric.txt", False)):
        exc = UserCodeFailed("code/g.py:make raised FileNotFoundError", stage="s")
        exc.__cause__ = FileNotFoundError(2, "No such file or directory", name)
        error = _remote_error(exc, call)
        assert ("relative to the worker's own folder" in error.message) is said, error.message
        assert ("absolute path" in (error.hint or "")) is said


@pytest.mark.parametrize("seed", range(6))
def test_drawn_projects_and_versions_on_one_worker_each_run_their_own_code(seed: int) -> None:
    """The class the hunt found by hand, drawn: two projects with the same module names (and
    sometimes the same sources), versions that do or do not put a folder on sys.path, lazy
    and top-level imports, in a random order on one long-lived worker process. Each call must
    give what its own version gives (the oracle: computed from the draw), and between calls
    other code on the worker sees none of the projects' modules."""
    out = drive(f'''
        import random
        rng = random.Random({seed})
        expected, got, leaks = [], [], []
        for _ in range(14):
            root = rng.choice(["/nonexistent/p1", "/nonexistent/p2"])
            v, lazy, path = rng.randrange(3), rng.random() < 0.5, rng.random() < 0.5
            head = "import os, sys\\n"
            if path:
                head += "sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))\\n"
            body = ("def f(ctx):\\n" + ("    from code import helper\\n" if lazy else "") +
                    "    try:\\n        import extra\\n        w = extra.W\\n"
                    "    except ImportError:\\n        w = -1\\n    return helper.V + w\\n")
            files = {{"code/__init__.py": "", "code/helper.py": f"V = {{v}}\\n",
                      "lib/extra.py": f"W = {{10 * v}}\\n",
                      "code/gen.py": head + ("" if lazy else "from code import helper\\n") + body}}
            expected.append(v + (10 * v if path else -1))
            got.append(call(bundle(files, root), "code/gen.py:f", None))
            import code
            leaks.append(str(getattr(code, "__file__", "")).startswith("/nonexistent"))
            sys.modules.pop("code", None)
        out["expected"], out["got"], out["leaks"] = expected, got, leaks
        ''')
    assert out["got"] == out["expected"]
    assert not any(out["leaks"])
