"""Built-in output processors of generate and transform stages (DESIGN.md §1, `processors`).

A stage's `processors` is a list of one-key mappings applied in order to its output table:

- `drop: [cols]` removes those columns.
- `keep: [cols]` keeps only those columns, in that order (a name may appear once).
- `rename: {old: new}` renames columns; the renames happen at once, so `{a: b, b: a}` swaps.
- `filter: "<expression>"` keeps the rows where the expression is true; null counts as
  false (see `filterexpr` for the language).
- `dedupe: [cols]` keeps the first row of each distinct combination of those columns, in
  the table's order. `dedupe: []` compares whole rows (every column). Nulls equal nulls
  and NaN equals NaN here, as in SQL's DISTINCT. (`dedupe: null` is not accepted: the
  Workflowfile validator requires a list, so "all columns" is spelled `[]`.)
- `limit: N` keeps the first N rows.

A processor that removes every column (`keep: []`, or `drop` of all of them) is an error:
a table without columns cannot hold rows worth keeping.

`validate_processors` makes the checks that need no data (shapes, filter syntax) and
raises `WorkflowError`; `apply_processors` raises `StageFailed` for what only the data can
show (an unknown column, a filter that does not fit the column types).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import StageFailed, WorkflowError, suggest
from .filterexpr import (
    FilterSyntaxError,
    Node,
    UnknownColumnError,
    check_columns,
    column_hint,
    columns_used,
    parse,
    to_expression,
)
from .keys import PROCESSORS

if TYPE_CHECKING:
    import pyarrow as pa

KEY = "processors"


@dataclass(frozen=True)
class _Step:
    number: int  # 1-based position in the list
    name: str
    value: Any
    expression: Node | None = None  # the parsed filter

    @property
    def label(self) -> str:
        return f"processor {self.number} (`{self.name}`)"


def validate_processors(processors: Sequence[Mapping[str, Any]], stage: str | None) -> None:
    """Static checks (no data needed): each item's shape, and each filter's syntax.

    Raises `WorkflowError` (a `FilterSyntaxError` for a bad expression) naming the stage,
    the key `processors` and the processor's position.
    """
    _steps(processors, stage)


def apply_processors(
    table: pa.Table, processors: Sequence[Mapping[str, Any]], stage: str
) -> pa.Table:
    """Apply `processors` in order to `table` and return the result.

    Raises `WorkflowError` for what `validate_processors` rejects and `StageFailed`
    (stage=`stage`, key="processors") when the table does not fit a processor: an unknown
    column (with a did-you-mean), or a filter the column types cannot evaluate.
    """
    history: dict[str, str] = {}  # column name → what an earlier processor did to it
    for step in _steps(processors, stage):
        table = _APPLY[step.name](table, step, _Run(stage, step, history))
    return table


# ---------------------------------------------------------------- static checks


def _steps(processors: Any, stage: str | None) -> list[_Step]:
    def fail(message: str, hint: str | None = None) -> WorkflowError:
        return WorkflowError(message, stage=stage, key=KEY, hint=hint)

    if isinstance(processors, str | bytes | Mapping) or not isinstance(processors, Sequence):
        raise fail(
            f"`processors` must be a list of processors, got {type(processors).__name__}",
            "e.g. [{drop: [col]}, {limit: 10}]",
        )
    steps = []
    for number, item in enumerate(processors, 1):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise fail(
                f"processor {number}: each processor is a mapping with one key: "
                + ", ".join(PROCESSORS),
                "e.g. `- drop: [col]`",
            )
        ((name, value),) = item.items()
        if name not in PROCESSORS or name not in _APPLY:
            raise fail(f"processor {number}: unknown processor `{name}`",
                       suggest(str(name), PROCESSORS) or "use one of " + ", ".join(PROCESSORS))
        step = _Step(number, name, value)
        _CHECKS[name](step, fail)
        if name == "filter":
            try:
                step = _Step(number, name, value, parse(value))
            except FilterSyntaxError as err:
                raise err.with_context(f"{step.label}: ", stage=stage, key=KEY) from None
        steps.append(step)
    return steps


def _names(step: _Step, fail: Any, *, allow_empty: bool = True) -> None:
    value = step.value
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise fail(f"{step.label} takes a list of column names, got {_kind(value)}",
                   f"e.g. `{step.name}: [col_a, col_b]`")
    if not allow_empty and not value:
        raise fail(f"{step.label}: an empty list would remove every column",
                   f"name the columns to {step.name}")


def _check_keep(step: _Step, fail: Any) -> None:
    _names(step, fail, allow_empty=False)
    twice = _repeated(step.value)
    if twice:
        raise fail(f"{step.label} names `{twice}` more than once")


def _check_rename(step: _Step, fail: Any) -> None:
    value = step.value
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise fail(f"{step.label} takes a mapping {{old: new}} of column names, "
                   f"got {_kind(value)}", "e.g. `rename: {score: quality}`")
    twice = _repeated(list(value.values()))
    if twice:
        raise fail(f"{step.label} renames two columns to `{twice}`")
    if any(not new for new in value.values()):
        raise fail(f"{step.label}: a column's new name is empty")


def _check_filter(step: _Step, fail: Any) -> None:
    if not isinstance(step.value, str) or not step.value.strip():
        raise fail(f"{step.label} takes a non-empty expression (a string), got {_kind(step.value)}",
                   "e.g. `filter: \"score >= 0.5\"`")


def _check_limit(step: _Step, fail: Any) -> None:
    value = step.value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(f"{step.label} takes an integer >= 0, got {_kind(value)}", "e.g. `limit: 100`")


def _repeated(values: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"string {value!r}"
    return type(value).__name__


_CHECKS: dict[str, Any] = {
    "drop": _names,
    "keep": _check_keep,
    "rename": _check_rename,
    "filter": _check_filter,
    "dedupe": _names,
    "limit": _check_limit,
}


# ---------------------------------------------------------------- applying


@dataclass
class _Run:
    stage: str
    step: _Step
    history: dict[str, str]

    def fail(self, message: str, hint: str | None = None) -> StageFailed:
        return StageFailed(f"{self.step.label}: {message}", stage=self.stage, key=KEY, hint=hint)

    def unknown(self, name: str, columns: Sequence[str]) -> StageFailed:
        return self.fail(f"unknown column `{name}`", self.unknown_hint(name, columns))

    def unknown_hint(self, name: str, columns: Sequence[str]) -> str:
        if name in self.history:
            return f"`{name}` was {self.history[name]}"
        return column_hint(name, columns)

    def index(self, table: pa.Table, name: str) -> int:
        """The position of column `name`, which must exist exactly once."""
        found = [i for i, c in enumerate(table.column_names) if c == name]
        if not found:
            raise self.unknown(name, table.column_names)
        if len(found) > 1:
            raise self.fail(f"the table has {len(found)} columns named `{name}`",
                            "rename or drop the duplicates in the stage's code")
        return found[0]

    def remember(self, names: Sequence[str], what: str) -> None:
        for name in names:
            self.history[name] = f"{what} by {self.step.label}"


def _drop(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    names = table.column_names
    for name in step.value:
        if name not in names:
            raise run.unknown(name, names)
    dropped = set(step.value)
    if all(n in dropped for n in names) and names:
        raise run.fail("dropping these columns would remove every column",
                       "keep at least one column")
    run.remember(step.value, "dropped")
    return table.select([i for i, n in enumerate(names) if n not in dropped])


def _keep(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    indices = [run.index(table, name) for name in step.value]
    kept = set(step.value)
    run.remember([n for n in table.column_names if n not in kept], "not kept")
    return table.select(indices)


def _rename(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    mapping: Mapping[str, str] = step.value
    names = list(table.column_names)
    for old in mapping:
        names[run.index(table, old)] = mapping[old]
    renamed = set(mapping.values())
    for new in renamed:
        if names.count(new) > 1:
            raise run.fail(f"two columns would be named `{new}`",
                           f"drop `{new}` first, or choose another name")
    for old, new in mapping.items():
        if old != new:
            run.history.pop(new, None)
            if old not in renamed:
                run.history[old] = f"renamed to `{new}` by {step.label}"
    return table.rename_columns(names)


def _filter(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    import pyarrow as pa

    node = step.expression
    assert node is not None
    text: str = step.value
    try:
        check_columns(node, table.column_names, text)
    except UnknownColumnError as err:
        hint = run.unknown_hint(err.name, table.column_names)
        raise StageFailed(
            f"{step.label}: {err.message}", stage=run.stage, key=KEY, hint=hint
        ) from None
    for name in sorted(columns_used(node)):
        run.index(table, name)  # exactly once, or an error
    try:
        return table.filter(to_expression(node, schema=table.schema))
    except (pa.ArrowException, TypeError, ValueError, ArithmeticError) as err:
        types = ", ".join(
            f"`{name}`: {table.schema.field(name).type}" for name in sorted(columns_used(node))
        )
        raise run.fail(
            f"cannot evaluate `{text}`: {err}",
            f"column types: {types}" if types else None,
        ) from None


def _dedupe(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = list(dict.fromkeys(step.value)) or list(table.column_names)
    indices = [run.index(table, name) for name in keys]
    if table.num_rows <= 1:
        return table
    if not indices:  # no columns at all: every row is the same row
        return table.slice(0, 1)
    key_table = table.select(indices).rename_columns([f"k{i}" for i in range(len(indices))])
    try:
        row = _row_numbers(table.num_rows)
        grouped = (
            key_table.append_column("row", row)
            .group_by(key_table.column_names, use_threads=False)
            .aggregate([("row", "min")])
        )
        first = grouped.column("row_min")
        first = pc.take(first, pc.sort_indices(first))
    except pa.ArrowNotImplementedError:  # keys arrow cannot hash (lists, structs, maps)
        first = pa.array(_first_rows_python(key_table), pa.int64())
    return table.take(first)


def _row_numbers(n: int) -> pa.Array:
    import pyarrow as pa

    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy usually comes with pyarrow
        return pa.array(range(n), pa.int64())
    return pa.array(np.arange(n, dtype=np.int64))


def _first_rows_python(key_table: pa.Table) -> list[int]:
    seen: set[Any] = set()
    first = []
    columns = [column.to_pylist() for column in key_table.columns]
    for i, row in enumerate(zip(*columns, strict=True)):
        key = _freeze(row)
        if key not in seen:
            seen.add(key)
            first.append(i)
    return first


_NAN = object()


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a row value: lists → tuples, dicts → item tuples, NaN → one NaN."""
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    if isinstance(value, list | tuple):
        return ("seq", tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("map", tuple((k, _freeze(v)) for k, v in value.items()))
    return value


def _limit(table: pa.Table, step: _Step, run: _Run) -> pa.Table:
    return table.slice(0, step.value)


_APPLY: dict[str, Any] = {
    "drop": _drop,
    "keep": _keep,
    "rename": _rename,
    "filter": _filter,
    "dedupe": _dedupe,
    "limit": _limit,
}
