"""Reviews are kept in the build cache: `dd-build override --restore STAGE` sets the last
review again after it was released (or lost with `clean`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import env, make_project  # noqa: E402


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def reviewed(root: Path, name: str, keep: int) -> Path:
    import pyarrow.parquet as pq

    if not (root / "review.parquet").exists():  # the stage's own output, once
        assert dd(root, "export", "a", str(root / "review.parquet")).returncode == 0
    table = pq.read_table(root / "review.parquet").slice(0, keep)
    path = root / name
    pq.write_table(table, path)
    return path


def test_override_restore_brings_back_the_last_review(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    first = reviewed(root, "first.parquet", 3)
    assert dd(root, "override", "a", str(first)).returncode == 0
    second = reviewed(root, "second.parquet", 5)
    assert dd(root, "override", "a", str(second)).returncode == 0
    assert dd(root, "override", "--release", "a").returncode == 0
    first.unlink()
    second.unlink()
    done = dd(root, "override", "--restore", "a", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["restored"] and doc["rows"] == 5 and doc["source"].endswith("second.parquet")
    record = json.loads((root / "artifacts" / "demo" / "a" / "stage.json").read_text())
    assert record["output"]["kind"] == "override" and record["output"]["rows"] == 5
    status = dd(root, "status")
    assert "override from " + str(root / "second.parquet") in status.stdout, status.stdout
    # the stages after it rerun with the review
    stages = {s["stage"]: s for s in json.loads(dd(root, "--json").stdout)["stages"]}
    assert stages["b"]["result"] == "completed"


def test_override_restore_after_clean(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    review = reviewed(root, "r.parquet", 4)
    assert dd(root, "override", "a", str(review)).returncode == 0
    assert dd(root, "clean", "a").returncode == 0
    assert dd(root, "a").returncode == 0  # restored from the cache (its own build)
    done = dd(root, "override", "--restore", "a")
    assert done.returncode == 0, done.stderr
    assert "outputs its review of" in done.stdout


def test_override_restore_without_a_kept_review_exits_2(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    done = dd(root, "override", "--restore", "a", "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert "no review kept" in error["message"] and error["stage"] == "a"
    both = dd(root, "override", "--restore", "a", "x.parquet")
    assert both.returncode == 2
