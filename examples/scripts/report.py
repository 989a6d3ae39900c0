"""Write a markdown summary of a parquet dataset.

Usage: python examples/scripts/report.py <input> <output.md>

The input (a parquet file or a folder of parquet files: a stage's output, passed
by `{inputs[joined]}`) is summarised into the output.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds


def _is_parquet(path: Path) -> bool:
    if path.is_dir():
        return any(path.rglob("*.parquet"))
    return path.suffix == ".parquet" and path.is_file()


def summarise(table) -> str:
    rows = table.num_rows
    cols = set(table.column_names)
    lines = ["# Persona conversations: summary", "", f"- rows: {rows}"]
    if "passed" in cols:
        passed = sum(1 for v in table.column("passed").to_pylist() if v)
        rate = passed / rows if rows else 0.0
        lines.append(f"- passed: {passed} ({rate:.1%})")
    if "score" in cols:
        scores = [s for s in table.column("score").to_pylist() if s is not None]
        mean = sum(scores) / len(scores) if scores else 0.0
        lines.append(f"- mean score: {mean:.3f}")
    if "occupation" in cols:
        counts = Counter(table.column("occupation").to_pylist())
        lines += [
            "",
            "## Rows per occupation",
            "",
            "| occupation | rows |",
            "|---|---:|",
        ]
        for occupation, n in sorted(
            counts.items(), key=lambda kv: (-kv[1], str(kv[0]))
        ):
            lines.append(f"| {occupation} | {n} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, out = Path(argv[0]), Path(argv[1])
    if not _is_parquet(source):
        print(f"report.py: {source} is not parquet data", file=sys.stderr)
        return 2
    table = ds.dataset(str(source), format="parquet").to_table()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(summarise(table), encoding="utf-8")
    print(f"report.py: wrote {out} ({table.num_rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
