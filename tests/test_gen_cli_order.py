"""Generated command lines: `-j`/`--jobs` (with N, alone, attached as `-j4`/`--jobs=4`) placed
before, between and after targets, with `--`, with stage names that look like numbers (`1`,
`2x`, `nan`, `inf`, `1e3`, `1.`) and numbers that are no stage names, and other flags (-n,
--explain, -k, --json, -q). Each command line is parsed by the real CLI (buildtool.cli.main,
with the build's `prepare` observed: the targets and the -j it was given, and the jobs
it runs with) and by an independent oracle written here from the README's rules ("The CLI" and
"Stages at once: -j"):

* `-j N`/`--jobs N`: N when the next word looks like a number (digits, a sign, a decimal
  part); a whole number of 1 or more is N (above 32: 32, with a note), anything else written
  as a number (0, -1, 1.5, `1.`) is a usage error (exit 2);
* `-j` alone (last, before an option or `--`, or before a word that is not a number: `-j nan`
  is `-j` alone and the target `nan`, as in make): 32;
* `-jN`, `-j=N`, `--jobs=N`: N, whatever it looks like (`-jnan` is a usage error);
* after `--` every word is a target; a target that is no stage is an error (exit 2);
* the last -j wins; with no -j, the Workflowfile's `jobs:` (none here: 1).

A sample of the command lines also runs as `python -m buildtool --json -n`, whose document
must list exactly the oracle's targets (the stages are independent: the closure is the
targets). DD_GEN_CLI_EXAMPLES=N draws N command lines instead of the default.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

EXAMPLES = int(os.environ.get("DD_GEN_CLI_EXAMPLES", "400"))
SAMPLE = 12  # of them also run as a real subprocess each
CAP = 32

STAGES = ["1", "2x", "nan", "inf", "a", "1e3", "1.", "07", "x-1"]
# Words that look like numbers and are no stage: N (or a usage error) after -j.
NUMBERS = ["4", "40", "32", "33", "0", "-1", "-3", "1.5", "2.0", "+2", "007", "00"]

WORKFLOW = "workflow: argo\nstages:\n" + "".join(
    f'  "{name}": {{generate: code/s.py:rows, num_records: 2}}\n' for name in STAGES)
CODE = "def rows(ctx):\n    return [{'i': ctx.offset + k} for k in range(ctx.size)]\n"

# The real CLI, in one process for every command line: each main(argv) with -n plans only.
DRIVER = '''
import json, sys
import buildtool.execute as execute
from buildtool.cli import main

seen = []
real = execute.prepare

def prepare(workflow, config, *rest, **kw):
    jobs = execute.jobs_for(config, workflow)[0]
    seen.append({"targets": list(config.targets), "asked": config.jobs, "jobs": jobs})
    return real(workflow, config, *rest, **kw)

execute.prepare = prepare
results = []
for argv in json.loads(open(sys.argv[1]).read()):
    seen.clear()
    code = main(argv)
    results.append({"code": code, "seen": seen[0] if seen else None})
open(sys.argv[2], "w").write(json.dumps(results))
'''

_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")  # what "looks like a number" means here


def oracle(argv: list[str]) -> dict[str, Any]:
    """What the README's rules say: {"code": 0 or 2, "targets", "asked", "jobs"}."""
    targets: list[str] = []
    asked: int | None = None
    bad = False
    i, rest = 0, False

    def value(text: str) -> int | None:
        return int(text) if re.fullmatch(r"[+]?[0-9]+", text) and int(text) >= 1 else None

    while i < len(argv):
        word = argv[i]
        i += 1
        if rest:
            targets.append(word)
        elif word == "--":
            rest = True
        elif word in ("-j", "--jobs"):
            nxt = argv[i] if i < len(argv) else None
            if nxt is not None and _NUMBER.fullmatch(nxt):
                i += 1
                asked = value(nxt)
                bad = bad or asked is None
            else:
                asked = CAP
        elif word.startswith("--jobs="):
            asked = value(word.removeprefix("--jobs="))
            bad = bad or asked is None
        elif word.startswith("-j"):
            asked = value(word[2:].removeprefix("="))
            bad = bad or asked is None
        elif word.startswith("-") and not _NUMBER.fullmatch(word):
            continue  # one of the flags the generator writes (-1 is a word, as in argparse)
        else:
            targets.append(word)
    if bad or any(t not in STAGES for t in targets):
        return {"code": 2}
    return {"code": 0, "targets": targets, "asked": asked,
            "jobs": 1 if asked is None else min(asked, CAP)}


def _jobs_words(rng: random.Random) -> list[str]:
    n = rng.choice(NUMBERS + ["8", "1", "64"])
    return rng.choice([["-j"], ["--jobs"], ["-j", n], ["--jobs", n], [f"-j{n}"], [f"-j={n}"],
                       [f"--jobs={n}"], ["-j", rng.choice(STAGES)], [f"-j{rng.choice(STAGES)}"]])


def command_line(rng: random.Random) -> list[str]:
    """Targets, -j forms, flags and maybe `--`, in a random order (-n always, before `--`)."""
    words: list[list[str]] = [[rng.choice(STAGES)] for _ in range(rng.randint(0, 4))]
    words += [_jobs_words(rng) for _ in range(rng.choice([0, 1, 1, 1, 2]))]
    words += [[flag] for flag in ("--explain", "-k", "--json", "-q") if rng.random() < 0.3]
    if rng.random() < 0.15:
        words.append([rng.choice(NUMBERS)])  # a number where a target goes
    rng.shuffle(words)
    words.insert(rng.randint(0, len(words)), [rng.choice(["-n", "--dry-run"])])
    argv = [w for group in words for w in group]
    if rng.random() < 0.35:  # `--`, then targets (and now and then a -j, a target there)
        tail = [rng.choice(STAGES) for _ in range(rng.randint(0, 2))]
        if rng.random() < 0.25:
            tail.insert(rng.randint(0, len(tail)), rng.choice(["-j", "-j4"]))
        argv += ["--", *tail]
    return argv


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("argo")
    (root / "code").mkdir()
    (root / "code" / "s.py").write_text(CODE)
    (root / "Workflowfile").write_text(WORKFLOW)
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _parsed(project: Path, lines: list[list[str]]) -> list[dict[str, Any]]:
    (project / "argv.json").write_text(json.dumps(lines))
    subprocess.run([sys.executable, "-c", DRIVER, "argv.json", "out.json"], cwd=project,
                   env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=240, check=True)
    return json.loads((project / "out.json").read_text())


def _compare(argv: list[str], got: dict[str, Any]) -> str | None:
    want = oracle(argv)
    seen = got["seen"]
    found: dict[str, Any] = {"code": got["code"]}
    if seen is not None and got["code"] == 0:
        found.update(seen)
    return None if found == want else f"{argv}: the CLI gave {found}, the rules say {want}"


def test_the_oracle_follows_the_documented_examples() -> None:
    # README: `-j judged` is -j alone and the target; -j alone is the cap; 0/negative/fraction
    # are usage errors; a stage named nan or inf is a target, not N.
    assert oracle(["-j", "a"]) == {"code": 0, "targets": ["a"], "asked": 32, "jobs": 32}
    assert oracle(["a", "-j"])["jobs"] == 32
    assert oracle(["-j", "nan", "inf"])["targets"] == ["nan", "inf"]
    assert oracle(["-j", "1", "a"]) == {"code": 0, "targets": ["a"], "asked": 1, "jobs": 1}
    assert oracle(["-j", "40"])["jobs"] == 32
    assert [oracle(["-j", n])["code"] for n in ("0", "-1", "1.5")] == [2, 2, 2]
    assert oracle(["--", "-j"])["code"] == 2  # a target named -j: no such stage


def test_generated_command_lines_parse_as_the_rules_say(project: Path) -> None:
    rng = random.Random(20261130)
    lines = [command_line(rng) for _ in range(EXAMPLES)]
    lines += [["-j", "1", "-n"], ["-n", "-j", "nan"], ["-n", "1", "-j", "--", "inf"],
              ["-n", "-j", "-1"], ["-n", "--jobs", "1.", "a"], ["-n", "-j", "1e3"],
              # options between targets: "unrecognized arguments: 2x" before the fix
              ["-n", "a", "-k", "2x"], ["-n", "a", "-j", "4", "2x"], ["inf", "-n", "--", "1"],
              ["-n", "--", "-j", "a"]]
    results = _parsed(project, lines)
    wrong = [text for argv, got in zip(lines, results, strict=True)
             if (text := _compare(argv, got)) is not None]
    assert wrong == [], "\n".join(wrong[:20])
    codes = {oracle(argv)["code"] for argv in lines}
    assert codes == {0, 2}  # the generator reaches both


def test_a_sample_runs_as_the_real_cli(project: Path) -> None:
    rng = random.Random(7)
    lines = [command_line(rng) for _ in range(SAMPLE)]
    lines += [["-n", "--json", "-j", "nan", "1"], ["--json", "-j", "40", "-n", "2x"]]
    for argv in lines:
        argv = argv if "--" not in argv else \
            [*argv[:argv.index("--")], "--json", *argv[argv.index("--"):]]
        argv = argv if "--json" in argv else ["--json", *argv]
        want = oracle(argv)
        proc = subprocess.run([sys.executable, "-m", "buildtool", *argv], cwd=project,
                              env=_env(), capture_output=True, text=True, timeout=120)
        doc = json.loads(proc.stdout)
        assert proc.returncode == want["code"], (argv, proc.stderr)
        if want["code"] == 0:
            assert {s["stage"] for s in doc["stages"]} == set(want["targets"] or STAGES), argv
        else:
            assert doc["ok"] is False, argv
