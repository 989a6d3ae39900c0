"""A null build imports nothing it does not use, this change's modules included: no hashlib
(OpenSSL: no digest is made), no uuid/platform (no run id is made), no traceback/textwrap
(nothing failed); and the constants spelt out to keep them so are what they stand for.

One digest a null build may make: the compiled workflow checks a code file changed within the
last seconds by its content (its stats could hide a second edit in the same tick). A test's
files are always that young, so the importer of each module is looked at: only that check may
import hashlib."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Project
from test_nbcompile_cache import run

from buildtool.facts import EMPTY_DIGEST
from buildtool.fingerprint import digest_strings

NOT_IN_A_NULL_BUILD = ("hashlib", "uuid", "platform", "traceback", "textwrap",
                       "buildtool.usertrace")

# The CLI, with each first import of those modules noted with the dd-build frames that led
# to it, printed as JSON on stderr's last line.
HOOKED = """
import builtins, json, sys, traceback
watched = set(sys.argv[1].split(","))
seen = {}
real = builtins.__import__
def hooked(name, *args, **kwargs):
    if name in watched and name not in sys.modules and name not in seen:
        seen[name] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.name}"
                      for f in traceback.extract_stack()[:-1] if "buildtool" in f.filename]
    return real(name, *args, **kwargs)
builtins.__import__ = hooked
sys.argv = ["dd-build", "-q"]
from buildtool import cli
try:
    code = cli.main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write(chr(10) + json.dumps(seen) + chr(10))
raise SystemExit(code)
"""


def test_the_empty_digest_is_the_digest_it_stands_for() -> None:
    assert EMPTY_DIGEST == digest_strings(["(empty)"])


def test_a_null_build_makes_no_digest_run_id_or_traceback(project: Project) -> None:
    assert project.run().code == 0
    assert project.run("status").code == 0
    result, hit = run(project, "-q")
    assert result.code == 0 and hit
    proc = subprocess.run([sys.executable, "-c", HOOKED, ",".join(NOT_IN_A_NULL_BUILD)],
                          cwd=project.root, env=project.env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stderr.splitlines()[-1])
    assert set(seen) <= {"hashlib"}, seen
    if "hashlib" in seen:  # only to compare a young code file by its content
        assert "compiled.py:_same_content" in seen["hashlib"], seen


def test_a_build_that_runs_a_stage_still_digests_and_names_its_run(project: Project) -> None:
    assert project.run().code == 0
    record = project.record("a")
    assert record["run_id"].split("-")[-1].isalnum() and len(record["run_id"].split("-")[-1]) == 8
    assert all(b["digest"].startswith("sha256:") and len(b["digest"]) == 71
               for b in record["batches"])
