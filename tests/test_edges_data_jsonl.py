"""Issue 7 §3: JSONL export is faithful, or refused with a message.

Every column type JSON can hold (numbers, strings, bools, nulls, and lists and structs of them)
round-trips: `dd-build export S x.jsonl` then `pyarrow.json.read_json` with the original schema
gives the original table. Every type it cannot hold (bytes, dates and times, decimals, maps,
NaN and infinity) is refused: exit 2 from `dd-build export`, a stage failure (exit 1) from an
export copy. Driven through the real CLI, on a seed parquet file the test writes.
"""

from __future__ import annotations

import datetime
import decimal
import io
import json

import pyarrow as pa
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest
from conftest import Project

ECHO = '''
def echo(ctx):
    return ctx.seed_rows
'''

# name -> (type, values): every type JSONL export supports, with its edge values.
SUPPORTED: dict[str, tuple[pa.DataType, list]] = {
    "null": (pa.null(), [None, None, None]),
    "bool": (pa.bool_(), [True, False, None]),
    "int8": (pa.int8(), [-128, 127, None]),
    "int16": (pa.int16(), [-32768, 32767, 0]),
    "int32": (pa.int32(), [-2**31, 2**31 - 1, None]),
    "int64": (pa.int64(), [-2**63, 2**63 - 1, 0]),
    "uint8": (pa.uint8(), [0, 255, None]),
    "uint32": (pa.uint32(), [0, 2**32 - 1, 7]),
    "uint64": (pa.uint64(), [0, 2**64 - 1, None]),
    "float16": (pa.float16(), [0.5, -2.0, None]),
    "float32": (pa.float32(), [0.1, -3.4e38, 1e-30]),
    "float64": (pa.float64(), [0.1, -0.0, 1.7976931348623157e308]),
    "string": (pa.string(), ["plain", "ünïcødé \u2028 \"quoted\"\n\ttab", None]),
    "large_string": (pa.large_string(), ["a", "", None]),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), ["x", "y", "x"]),
    "list_int": (pa.list_(pa.int64()), [[1, 2], [], None]),
    "list_str": (pa.list_(pa.string()), [["a"], ["b", None], []]),
    "large_list": (pa.large_list(pa.float64()), [[1.5], [], None]),
    "fixed_list": (pa.list_(pa.int32(), 2), [[1, 2], [3, 4], None]),
    "struct": (pa.struct([("k", pa.string()), ("v", pa.int64())]),
               [{"k": "a", "v": 1}, {"k": None, "v": 2}, None]),
    "nested": (pa.list_(pa.struct([("xs", pa.list_(pa.bool_()))])),
               [[{"xs": [True]}], [{"xs": []}, {"xs": None}], None]),
}

# name -> (type, values): every type it refuses.
REFUSED: dict[str, tuple[pa.DataType, list]] = {
    "binary": (pa.binary(), [b"\x00\xff", b"", None]),
    "fixed_binary": (pa.binary(2), [b"ab", b"cd", None]),
    "date32": (pa.date32(), [datetime.date(2024, 2, 29), None, datetime.date(1, 1, 1)]),
    "timestamp": (pa.timestamp("us"), [datetime.datetime(2024, 1, 1, 12, 30), None, None]),
    "time64": (pa.time64("us"), [datetime.time(1, 2, 3), None, None]),
    "duration": (pa.duration("s"), [datetime.timedelta(seconds=5), None, None]),
    "decimal": (pa.decimal128(20, 4), [decimal.Decimal("1.2345"), None, None]),
    "map": (pa.map_(pa.string(), pa.int64()), [[("a", 1)], [], None]),
    "list_of_dates": (pa.list_(pa.date32()), [[datetime.date(2020, 1, 1)], [], None]),
    "nan": (pa.float64(), [1.0, float("nan"), None]),
    "inf": (pa.float32(), [float("inf"), 0.0, None]),
    "nan_in_list": (pa.list_(pa.float64()), [[1.0], [float("-inf")], None]),
}


def _table(cases: dict[str, tuple[pa.DataType, list]]) -> pa.Table:
    columns = {"id": pa.array([0, 1, 2], pa.int64())}
    columns.update({name: pa.array(values, type) for name, (type, values) in cases.items()})
    return pa.table(columns)


def _read_back(data: bytes, schema: pa.Schema) -> pa.Table:
    """Read JSONL back with the original schema; a type the JSON reader cannot produce
    (dictionary, float16, fixed-size and large lists) is read as it infers and then cast."""
    readable = pa.schema([_readable(f) for f in schema])
    table = pjson.read_json(io.BytesIO(data),
                            parse_options=pjson.ParseOptions(explicit_schema=readable))
    return table.cast(schema)


def _readable(field: pa.Field) -> pa.Field:
    t = field.type
    if pa.types.is_dictionary(t):
        return pa.field(field.name, t.value_type)
    if pa.types.is_floating(t):
        return pa.field(field.name, pa.float64())
    if pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        return pa.field(field.name, pa.list_(t.value_type))
    return field


def _seeded(project: Project, table: pa.Table, stages: str) -> Project:
    (project.root / "data").mkdir()
    pq.write_table(table, project.root / "data/src.parquet")
    project.write("code/echo.py", ECHO)
    project.write("Workflowfile", "workflow: demo\nstages:\n" + stages)
    return project


def test_every_supported_type_round_trips(project: Project) -> None:
    original = _table(SUPPORTED)
    p = _seeded(project, original, """
  g:
    generate: code/echo.py:echo
    seed: data/src.parquet
    outputs: [copy.jsonl]
""")
    r = p.run()
    assert r.code == 0, r.stderr
    assert p.table("g").equals(original)  # the stage stored it as it came
    e = p.run("export", "g", "out.jsonl")
    assert e.code == 0, e.stderr
    data = (p.root / "out.jsonl").read_bytes()
    assert data == (p.root / "copy.jsonl").read_bytes()  # export copy == export command
    lines = data.decode("utf-8").split("\n")  # not splitlines: U+2028 is inside a string
    assert lines[-1] == "" and len(lines) == 4
    assert all(json.loads(line) for line in lines[:-1])  # strict JSON per line
    back = _read_back(data, original.schema)
    for name in original.column_names:
        assert back.column(name).equals(original.column(name)), name
    # the types JSON has natively need no schema at all to come back the same
    native = ["id", "bool", "int64", "float64", "string", "list_int", "list_str", "struct",
              "nested"]
    inferred = pjson.read_json(io.BytesIO(data)).select(native)
    assert inferred.equals(original.select(native))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_type_is_a_clear_error(project: Project, name: str) -> None:
    stages = """
  g:
    generate: code/echo.py:echo
    seed: data/src.parquet
  copy:
    generate: code/echo.py:echo
    seed: data/src.parquet
    outputs: [copy.jsonl]
"""
    p = _seeded(project, _table({name: REFUSED[name]}), stages)
    r = p.run("-k", "--json")
    assert r.code == 1, r.stderr
    assert r.stage("g")["result"] == "completed"
    # an export copy: a stage failure naming the stage, the output and the column
    assert r.stage("copy")["result"] == "failed"
    assert p.record("copy")["status"] == "failed"
    error = r.stage("copy")["error"]
    for word in ("stage 'copy'", "copy.jsonl", f"column '{name}'", ".parquet"):
        assert word in error, (word, error)
    assert not (p.root / "copy.jsonl").exists()
    # the export command: exit 2 with the same message, and no file written
    e = p.run("export", "g", "out.jsonl")
    assert e.code == 2, e.stderr
    assert f"column '{name}'" in e.stderr and ".parquet" in e.stderr
    assert "Traceback" not in e.stderr + r.stderr
    assert not (p.root / "out.jsonl").exists()
    # .parquet keeps every type
    assert p.run("export", "g", "out.parquet").code == 0
    back, original = pq.read_table(p.root / "out.parquet"), _table({name: REFUSED[name]})
    assert back.schema == original.schema
    assert repr(back.to_pylist()) == repr(original.to_pylist())  # NaN != NaN, its repr is


def test_a_list_column_to_csv_is_refused_by_the_export_command(project: Project) -> None:
    p = _seeded(project, _table({"list_int": SUPPORTED["list_int"]}), """
  g:
    generate: code/echo.py:echo
    seed: data/src.parquet
""")
    assert p.run().code == 0
    e = p.run("export", "g", "out.csv")
    assert e.code == 2
    assert "column 'list_int'" in e.stderr and ".jsonl" in e.stderr
    assert not (p.root / "out.csv").exists()
