"""The first rows of a table, as Python values (`show --json`) or a plain text table (`show`).

Imports pyarrow: import this module only where data is touched.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .tables import CONVERT_ERRORS


def preview_rows(table: pa.Table, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows as Python values, for `show`. A column Python cannot hold (a
    timestamp past the year 9999) is shown as Arrow's text of it."""
    part = table.slice(0, limit)
    columns = [_python_values(column) for column in part.columns]
    return [{name: values[r] for name, values in zip(part.column_names, columns, strict=True)}
            for r in range(part.num_rows)]


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    try:
        return column.to_pylist()
    except CONVERT_ERRORS:
        try:
            return column.cast(pa.string()).to_pylist()
        except CONVERT_ERRORS:
            return [f"<{column.type}>"] * len(column)


def format_rows(table: pa.Table, limit: int) -> str:
    """A plain text table of the first `limit` rows."""
    rows = preview_rows(table, limit)
    names = table.column_names
    cells = [[_cell(row.get(n)) for n in names] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any, width: int = 40) -> str:
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"
