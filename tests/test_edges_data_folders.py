"""Issue 7 §2: a folder of parquet files is one dataset, wherever it is read.

A run stage whose first output is a folder (`show`, a transform input, a `seed:`), and a folder
named as a file seed or input (`seed: data/docs`): every .parquet file in it, in sorted path
order, schemas unified — never its first file only. Driven through the real CLI.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import Project, find_reason

CODE = '''
import json
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).parent


def count(ctx):
    """Transform: one row per input with its row count and the sum of `id`."""
    out = []
    for name, value in sorted(ctx.inputs.items()):
        if isinstance(value, pa.Table):
            out.append({"input": name, "rows": value.num_rows,
                        "ids": sum(value.column("id").to_pylist())})
    return out


def echo(ctx):
    """Generate: the batch's seed rows as they are."""
    return ctx.seed_rows


def paths(ctx):
    """Generate: one row naming what ctx.inputs maps each input to."""
    (HERE / "inputs.json").write_text(json.dumps(ctx.inputs, sort_keys=True))
    return [{"id": 0}]
'''

# Three files in the folder, written out of name order, with schemas that unify (int64 with
# double, a column only some files have), one in a subfolder, and a file that is not parquet.
WRITE_PARTS = '''
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
out = sys.argv[1]
os.makedirs(out + "/sub", exist_ok=True)
pq.write_table(pa.table({"id": [5, 6], "score": [0.5, 0.25]}), out + "/part-2.parquet")
pq.write_table(pa.table({"id": [1, 2, 3], "score": [1, 2, 3]}), out + "/part-1.parquet")
pq.write_table(pa.table({"id": [10], "score": [9.5], "extra": ["x"]}), out + "/sub/part-3.parquet")
open(out + "/README.md", "w").write("not data")
'''

RUN_FOLDER = """
workflow: demo
stages:
  parts:
    run: python code/write_parts.py {outputs[0]}
    inputs: [code/write_parts.py]
    outputs: [out/parts]
  counted:
    transform: code/stages.py:count
    inputs: [parts]
  seeded:
    generate: code/stages.py:echo
    seed: parts
    batch_size: 100
"""

ALL_IDS = [1, 2, 3, 5, 6, 10]  # part-1, part-2, sub/part-3: sorted path order


def _project(project: Project, workflow: str) -> Project:
    project.write("code/stages.py", CODE)
    project.write("code/write_parts.py", WRITE_PARTS)
    project.write("Workflowfile", workflow)
    return project


def test_run_stage_folder_output_is_read_whole(project: Project) -> None:
    p = _project(project, RUN_FOLDER)
    r = p.run("--json")
    assert r.code == 0, r.stderr
    # `show` reads every parquet file of the folder, in sorted path order
    shown = p.run("show", "parts", "-n", "100", "--json")
    assert shown.code == 0, shown.stderr
    rows = json.loads(shown.stdout)["data"]
    assert [row["id"] for row in rows] == ALL_IDS
    assert [row["score"] for row in rows] == [1.0, 2.0, 3.0, 0.5, 0.25, 9.5]  # unified: double
    assert [row["extra"] for row in rows] == [None] * 5 + ["x"]
    text = p.run("show", "parts")
    assert "(6 of 6 rows)" in text.stdout
    # a transform input sees the whole folder
    counted = p.table("counted").to_pylist()
    assert counted == [{"input": "parts", "rows": 6, "ids": sum(ALL_IDS)}]
    # a seed: the default num_records is every row, and the rows come in that order
    assert r.stage("seeded")["rows"] == 6
    assert p.table("seeded").column("id").to_pylist() == ALL_IDS
    # `dd-build export` writes the whole folder's table
    exported = p.run("export", "parts", "all.parquet")
    assert exported.code == 0, exported.stderr
    assert pq.read_table(p.root / "all.parquet").column("id").to_pylist() == ALL_IDS


def test_run_stage_folder_without_parquet_is_not_tabular(project: Project) -> None:
    p = _project(project, """
        workflow: demo
        stages:
          notes:
            run: mkdir -p {outputs[0]} && echo hi > {outputs[0]}/a.md
            outputs: [out/notes]
          seeded:
            generate: code/stages.py:echo
            seed: notes
        """)
    r = p.run()
    assert r.code == 1
    assert "✗ seeded: failed" in r.stderr and "no tabular output" in r.stderr
    assert "folder of .parquet files" in r.stderr
    assert "Traceback" not in r.stderr
    assert p.record("seeded")["status"] == "failed"
    shown = p.run("show", "notes")
    assert shown.code == 2 and "no tabular output" in shown.stderr


def test_run_stage_folder_with_clashing_files_fails_its_reader(project: Project) -> None:
    p = _project(project, """
        workflow: demo
        stages:
          parts:
            run: python code/clash.py {outputs[0]}
            inputs: [code/clash.py]
            outputs: [out/parts]
          counted:
            transform: code/stages.py:count
            inputs: [parts]
        """)
    p.write("code/clash.py", '''
        import os, sys
        import pyarrow as pa, pyarrow.parquet as pq
        os.makedirs(sys.argv[1], exist_ok=True)
        pq.write_table(pa.table({"id": [1]}), sys.argv[1] + "/a.parquet")
        pq.write_table(pa.table({"id": ["one"]}), sys.argv[1] + "/b.parquet")
        ''')
    r = p.run()
    assert r.code == 1, r.stderr
    assert "✗ counted: failed" in r.stderr
    assert "out/parts/a.parquet" in r.stderr and "out/parts/b.parquet" in r.stderr
    assert "'id'" in r.stderr and "Traceback" not in r.stderr
    assert p.record("counted")["status"] == "failed"


FOLDER_SEED = """
workflow: demo
stages:
  seeded:
    generate: code/stages.py:echo
    seed: data/docs
    batch_size: 4
"""


def _write_docs(p: Project) -> None:
    docs = p.root / "data" / "docs"
    (docs / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"id": [5, 6], "score": [0.5, 0.25]}), docs / "part-2.parquet")
    pq.write_table(pa.table({"id": [1, 2, 3], "score": [1, 2, 3]}), docs / "part-1.parquet")
    pq.write_table(pa.table({"id": [10], "score": [9.5], "extra": ["x"]}),
                   docs / "sub" / "part-3.parquet")
    (docs / "README.md").write_text("about the docs")


def test_folder_seed_reads_every_parquet_file(project: Project) -> None:
    p = _project(project, FOLDER_SEED)
    _write_docs(p)
    r = p.run("--json")
    assert r.code == 0, r.stderr
    assert r.stage("seeded")["rows"] == 6
    table = p.table("seeded")
    assert table.column("id").to_pylist() == ALL_IDS
    assert table.column("extra").to_pylist() == [None] * 5 + ["x"]
    # every file of the folder is an input whose digest counts (the README too)
    assert sorted(p.record("seeded")["inputs"]["files"]) == [
        "data/docs/README.md", "data/docs/part-1.parquet", "data/docs/part-2.parquet",
        "data/docs/sub/part-3.parquet"]
    assert p.run("--json").stage("seeded")["action"] == "up_to_date"
    # a changed file, and a new file, are changes of the seed
    pq.write_table(pa.table({"id": [7, 8]}), p.root / "data/docs/part-2.parquet")
    r = p.run("--json")
    assert find_reason(r.stage("seeded"), "input_changed")["input"] == "data/docs/part-2.parquet"
    assert p.table("seeded").column("id").to_pylist() == [1, 2, 3, 7, 8, 10]
    pq.write_table(pa.table({"id": [0]}), p.root / "data/docs/part-0.parquet")
    r = p.run("--json")
    assert find_reason(r.stage("seeded"), "input_changed")["input"] == "data/docs/part-0.parquet"
    assert p.table("seeded").column("id").to_pylist() == [0, 1, 2, 3, 7, 8, 10]


def test_folder_input_maps_to_the_folder(project: Project) -> None:
    p = _project(project, """
        workflow: demo
        stages:
          g:
            generate: code/stages.py:paths
            num_records: 1
            inputs: [data/docs]
          r:
            run: ls {inputs} > {outputs}
            inputs: [data/docs]
            outputs: [listing.txt]
        """)
    _write_docs(p)
    r = p.run()
    assert r.code == 0, r.stderr
    seen = json.loads((p.root / "code" / "inputs.json").read_text())
    assert seen == {"data/docs": str(p.root / "data" / "docs")}
    listing = (p.root / "listing.txt").read_text().split()
    assert "part-1.parquet" in listing and "sub" in listing  # `ls data/docs`: the folder itself
    (p.root / "data/docs/sub/part-3.parquet").unlink()
    r = p.run("--json")
    assert find_reason(r.stage("g"), "input_changed")["input"] == "data/docs/sub/part-3.parquet"


def test_seed_folder_without_data_is_a_clear_error(project: Project) -> None:
    p = _project(project, FOLDER_SEED)
    docs = p.root / "data" / "docs"
    docs.mkdir(parents=True)
    r = p.run()
    assert r.code == 2
    assert "stage 'seeded'" in r.stderr and "key 'seed'" in r.stderr
    assert "folder with no file" in r.stderr and "Traceback" not in r.stderr
    (docs / "notes.txt").write_text("no data here")
    r = p.run()
    assert r.code == 2
    assert "holds no .parquet file" in r.stderr and "Traceback" not in r.stderr
    assert not (p.artifacts / "seeded").exists()


def test_hidden_files_and_pycache_are_not_part_of_a_folder(project: Project) -> None:
    p = _project(project, FOLDER_SEED)
    _write_docs(p)
    assert p.run().code == 0
    (p.root / "data/docs/.part-9.parquet").write_bytes(b"half written")
    (p.root / "data/docs/__pycache__").mkdir()
    (p.root / "data/docs/__pycache__/x.pyc").write_bytes(b"\0")
    r = p.run("--json")
    assert r.code == 0, r.stderr
    assert r.stage("seeded")["action"] == "up_to_date"


def test_code_entry_may_name_a_folder(project: Project) -> None:
    p = _project(project, """
        workflow: demo
        stages:
          g:
            generate: code/stages.py:paths
            num_records: 1
            code: [helpers]
        """)
    p.write("helpers/a.py", "X = 1\n")
    assert p.run().code == 0
    p.write("helpers/deep/b.py", "Y = 2\n")
    r = p.run("--json")
    assert find_reason(r.stage("g"), "code_changed")["file"] == "helpers/deep/b.py"


def test_folder_path_reading_matches_the_digest_order(project: Project) -> None:
    """`part-10` sorts before `part-2` as a string: the rows follow that one order."""
    p = _project(project, FOLDER_SEED)
    docs = p.root / "data" / "docs"
    docs.mkdir(parents=True)
    for n in (2, 10, 1):
        pq.write_table(pa.table({"id": [n]}), docs / f"part-{n}.parquet")
    assert p.run().code == 0
    assert p.table("seeded").column("id").to_pylist() == [1, 10, 2]
