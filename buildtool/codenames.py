"""What a Python file binds at top level, read with `ast`: never imported, never executed.

The Workflowfile's `file.py:function` references are checked against it when the Workflowfile
is read, so a misspelt function fails before any stage runs rather than when its stage starts.
The check must never refuse a file that works: every way Python binds a module attribute
counts (def, async def, class, assignment of any form, import, for/with/except/match targets,
`:=`, `type`), a binding under `if`/`try`/`for` counts as made, and a file that may bind names
in a way no reading can follow (`from x import *`, `globals()`, `setattr`, `exec`, `vars`,
`sys.modules`, `__dict__`, a module `__getattr__`, a `global` statement in a function) is
trusted whatever it is asked for. A file that does not parse is left to the build, whose import
reports it.

Refused: a name the file never binds; a name whose every binding is an undecorated
`async def` (called, it returns a coroutine, never rows or a path); a name whose every binding
is a literal value (`make = "x"`), which cannot be called.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Past this size a file is not parsed (the check is a convenience; the build still checks).
MAX_PARSED_BYTES = 2_000_000

# Names and attributes through which code can bind module attributes the reading cannot see.
_DYNAMIC_NAMES = frozenset({"globals", "vars", "locals", "exec", "eval", "setattr",
                            "__builtins__", "__import__"})
_DYNAMIC_ATTRIBUTES = frozenset({"__dict__", "modules", "__setattr__"})
# Expressions whose value is never callable, in words.
_VALUES: dict[type[ast.AST], str] = {
    ast.JoinedStr: "a string", ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a mapping",
    ast.Set: "a set", ast.ListComp: "a list", ast.DictComp: "a mapping", ast.SetComp: "a set",
    ast.GeneratorExp: "a generator",
}
_CONSTANTS: dict[type, str] = {str: "a string", bytes: "bytes", bool: "a boolean",
                               int: "a number", float: "a number", complex: "a number"}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_VALUE = "value:"  # the prefix of a binding to a value that is never callable

Problem = Literal["missing", "async", "value"]


@dataclass
class ModuleNames:
    """The top-level bindings of one file, by name, in words: `def`, `async def`, a literal
    (`a string`), or `other` (any other binding)."""

    bindings: dict[str, list[str]] = field(default_factory=dict)
    dynamic: bool = False  # names may be bound in ways the reading cannot follow

    def bind(self, name: str, how: str = "other") -> None:
        self.bindings.setdefault(name, []).append(how)

    def problem(self, name: str) -> tuple[Problem, str] | None:
        """Why `getattr(module, name)` cannot give a function to call (with the value it is, in
        words, for `value`), or None when it may."""
        if self.dynamic:
            return None
        found = self.bindings.get(name)
        if not found:
            return "missing", ""
        if all(how == "async def" for how in found):
            return "async", ""
        if all(how.startswith(_VALUE) for how in found):
            return "value", found[-1].removeprefix(_VALUE)
        return None

    def functions(self) -> list[str]:
        """The names bound by a `def` (or a class), for a did-you-mean."""
        return [name for name, how in self.bindings.items()
                if not name.startswith("_") and {"def", "class"} & set(how)]


class CodeFile:
    """One project file that callables name, read once per reading of the Workflowfile (by
    `read`, when given: the reading records what it read, loadfacts.py)."""

    def __init__(self, path: Path, read: Callable[[], bytes | None] | None = None) -> None:
        self.path = path
        self._read_bytes = read or self._read_path
        self._data: bytes | None = None
        self._names: ModuleNames | None = None
        self._read = self._parsed = False

    def problem(self, function: str) -> tuple[Problem, str] | None:
        """Why the file gives no function `function` to call, or None when it may."""
        data = self.data()
        if data is None or _plainly_defines(data, function):
            return None
        names = self.names()
        return None if names is None else names.problem(function)

    def data(self) -> bytes | None:
        if not self._read:
            self._read = True
            self._data = self._read_bytes()
        return self._data

    def _read_path(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def names(self) -> ModuleNames | None:
        """Its top-level bindings; None when it cannot be read or parsed (the build's import
        then says why)."""
        if not self._parsed:
            self._parsed = True
            data = self.data()
            if data is not None and len(data) <= MAX_PARSED_BYTES:
                self._names = _parse(data, str(self.path))
        return self._names


def _plainly_defines(data: bytes, name: str) -> bool:
    """A `def` or `class` of `name` at the start of a line: the common case, found without
    parsing (async functions are not: they are checked)."""
    pattern = rb"^(?:def|class)[ \t]+" + re.escape(name.encode()) + rb"\b"
    return re.search(pattern, data, re.MULTILINE) is not None


def _parse(data: bytes, filename: str) -> ModuleNames | None:
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for "\d": the build's to say
            warnings.simplefilter("ignore")
            tree = ast.parse(data, filename=filename)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return module_names(tree)


def module_names(tree: ast.Module) -> ModuleNames:
    names = ModuleNames()
    for node in _walk(tree):
        _note(names, node)
    names.dynamic = names.dynamic or "__getattr__" in names.bindings
    return names


def _walk(tree: ast.Module) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, in the source's order, with whether it is in module scope (not inside a
    def, class or lambda). Iterative: a deeply nested file cannot exhaust the stack."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, top = stack.pop()
        yield node, top
        body: set[int] = set()
        if isinstance(node, _SCOPES):  # its body runs in a scope of its own; its decorators,
            # defaults, annotations and bases in the enclosing one
            parts = node.body if isinstance(node.body, list) else [node.body]
            body = {id(part) for part in parts}
        children = [(child, top and id(child) not in body)
                    for child in ast.iter_child_nodes(node)]
        stack.extend(reversed(children))  # popped in the source's order


def _note(names: ModuleNames, item: tuple[ast.AST, bool]) -> None:
    node, top = item
    if isinstance(node, ast.Name) and node.id in _DYNAMIC_NAMES or \
            isinstance(node, ast.Attribute) and node.attr in _DYNAMIC_ATTRIBUTES:
        names.dynamic = True
    elif isinstance(node, ast.Global):
        for name in node.names:
            names.bind(name)
    elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
        names.dynamic = True
    elif top:
        _note_binding(names, node)


def _note_binding(names: ModuleNames, node: ast.AST) -> None:
    """A binding made in module scope by `node`, if it makes one."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.bind(node.name, _def_kind(node))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            names.bind(alias.asname or alias.name.split(".")[0])
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            _bind_target(names, target, node.value)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        value = node.value if isinstance(node, ast.AnnAssign) else None
        if not isinstance(node, ast.AnnAssign) or node.value is not None:
            _bind_target(names, node.target, value)
    elif isinstance(node, (ast.For, ast.AsyncFor)):  # not a comprehension's: they stay in it
        _bind_target(names, node.target, None)
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        _bind_target(names, node.optional_vars, None)
    elif isinstance(node, ast.NamedExpr):
        _bind_target(names, node.target, None)
    else:
        _note_other(names, node)


def _note_other(names: ModuleNames, node: ast.AST) -> None:
    name = getattr(node, "name", None)  # except ... as NAME; match's NAME captures; `type NAME`
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and name:
        names.bind(name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
        names.bind(node.rest)
    elif type(node).__name__ == "TypeAlias":  # Python 3.12+
        target = getattr(node, "name", None)
        if isinstance(target, ast.Name):
            names.bind(target.id)


def _def_kind(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        return "class"
    if node.decorator_list:  # a decorator may return anything
        return "other"
    return "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"


def _bind_target(names: ModuleNames, target: ast.AST, value: ast.AST | None) -> None:
    if isinstance(target, ast.Name):
        what = _value_words(value)
        names.bind(target.id, _VALUE + what if what else "other")
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            _bind_target(names, element, None)
    elif isinstance(target, ast.Starred):
        _bind_target(names, target.value, None)
    # an attribute or subscript target binds no module name


def _value_words(value: ast.AST | None) -> str | None:
    """`value` in words when it can never be called (a literal), else None."""
    if isinstance(value, ast.Constant):
        return "None" if value.value is None else _CONSTANTS.get(type(value.value), "a constant")
    return _VALUES.get(type(value)) if value is not None else None
