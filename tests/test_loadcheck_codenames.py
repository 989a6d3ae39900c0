"""The load-time function check (codenames.py) never refuses a file that works.

Each way Python binds a name at module level is accepted, whatever block holds it; a file
that may bind names in ways a reading cannot follow is trusted. Property: for generated
modules, whenever the check refuses a name, running the module shows that the name is really
missing, is an async function (a call gives a coroutine), or is not callable.
"""

from __future__ import annotations

import inspect
import textwrap
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.codenames import CodeFile

# Every top-level form that binds `make` (each a complete module).
BINDINGS = {
    "def": "def make(ctx):\n    return []\n",
    "decorated": "@staticmethod\ndef make(ctx):\n    return []\n",
    "decorated-async": "import functools\n@functools.wraps(print)\nasync def make(ctx):\n"
                       "    return []\n",
    "class": "class make:\n    pass\n",
    "assign-name": "def _impl(ctx):\n    return []\nmake = _impl\n",
    "assign-lambda": "make = lambda ctx: []\n",
    "assign-call": "make = dict\n",
    "assign-chain": "make = other = len\n",
    "assign-tuple": "make, other = len, 1\n",
    "assign-list": "[make, other] = [len, 1]\n",
    "assign-starred": "*make, = [len]\n",
    "annotated": "from collections.abc import Callable\nmake: Callable = len\n",
    "augmented": "make = []\nmake += [len]\n",
    "walrus": "(make := len)\n",
    "walrus-in-comprehension": "[make := f for f in [len]]\n",
    "walrus-in-default": "def f(x=(make := len)):\n    pass\n",
    "walrus-in-decorator": "@(make := (lambda f: f))\ndef g():\n    pass\n",
    "import-from": "from os.path import join as make\n",
    "import-from-plain": "from os.path import join\nmake = join\n",
    "import-as": "import os.path as make\n",
    "import-dotted": "import make.sub\n",
    "relative-import": "from . import make\n",
    "for-target": "for make in [len]:\n    pass\n",
    "for-else": "for x in []:\n    pass\nelse:\n    make = len\n",
    "while": "while True:\n    make = len\n    break\n",
    "with-as": "import contextlib\nwith contextlib.nullcontext(len) as make:\n    pass\n",
    "with-tuple": "import contextlib\nwith contextlib.nullcontext((len, 1)) as (make, _):\n"
                  "    pass\n",
    "if-true": "if True:\n    def make(ctx):\n        return []\n",
    "if-false-else": "if False:\n    pass\nelse:\n    def make(ctx):\n        return []\n",
    "if-env": "import os\nif os.environ.get('X'):\n    make = len\n",
    "try-body": "try:\n    from json import loads as make\nexcept ImportError:\n    pass\n",
    "try-except": "try:\n    raise ImportError\nexcept ImportError:\n    make = len\n",
    "try-finally": "try:\n    pass\nfinally:\n    make = len\n",
    "except-as": "try:\n    raise ValueError\nexcept ValueError as make:\n    pass\n",
    "match-capture": "match len:\n    case make:\n        pass\n",
    "match-as": "match len:\n    case (int() | str()) as make:\n        pass\n    case _:\n"
                "        make = len\n",
    "match-star": "match [len]:\n    case [*make]:\n        pass\n",
    "match-mapping-rest": "match {1: 2}:\n    case {1: _, **make}:\n        pass\n",
    "global-in-function": "def setup():\n    global make\n    make = len\nsetup()\n",
    "global-in-class": "class K:\n    global make\n    make = len\n",
    "star-import": "from os.path import *\n",
    "globals": "globals()['make'] = len\n",
    "globals-update": "globals().update(make=len)\n",
    "vars": "vars()['make'] = len\n",
    "exec": "exec('make = len')\n",
    "setattr-module": "import sys\nsetattr(sys.modules[__name__], 'make', len)\n",
    "module-getattr": "def __getattr__(name):\n    return len\n",
    "module-dict": "import sys\nsys.modules[__name__].__dict__['make'] = len\n",
    "does-not-parse": "def make(ctx:\n",
    "null-byte": "make = 1\x00\n",
    "encoding-cookie": "# -*- coding: latin-1 -*-\ns = 'caf\xe9'\ndef make(ctx):\n"
                       "    return []\n",
    "after-a-docstring-mentioning-it": '"""\ndef make(ctx): in a string\n"""\nmake = len\n',
    "invalid-escape-warning": "x = '\\d'\ndef make(ctx):\n    return []\n",
}

# Modules that give no function `make` to call, and what the check says.
REFUSED = {
    "absent": ("def other(ctx):\n    return []\n", "missing"),
    "local-only": ("def f():\n    make = len\n", "missing"),
    "class-attribute": ("class K:\n    make = len\n", "missing"),
    "comprehension-variable": ("[make for make in [len]]\n", "missing"),
    "annotation-only": ("make: int\n", "missing"),
    "dotted-import-binds-the-top": ("import os.path\nimport xml.dom\n", "missing"),
    "in-a-string": ('"""\n  def make(ctx): ...\n"""\n', "missing"),
    "async": ("async def make(ctx):\n    return []\n", "async"),
    "async-twice": ("import os\nif os.environ.get('X'):\n    async def make(ctx):\n"
                    "        return 1\nelse:\n    async def make(ctx):\n        return 2\n",
                    "async"),
    "string": ("make = 'x'\n", "value"),
    "number": ("make: int = 3\n", "value"),
    "list": ("make = [len]\n", "value"),
    "none": ("make = None\n", "value"),
    "f-string": ("x = 1\nmake = f'{x}'\n", "value"),
}


def check(tmp_path: Path, source: str | bytes, name: str = "make") -> str | None:
    path = tmp_path / "m.py"
    path.write_bytes(source if isinstance(source, bytes) else source.encode("latin-1"
                     if "latin-1" in source else "utf-8"))
    found = CodeFile(path).problem(name)
    return None if found is None else found[0]


@pytest.mark.parametrize("form", BINDINGS)
def test_every_binding_form_is_accepted(tmp_path: Path, form: str) -> None:
    assert check(tmp_path, BINDINGS[form]) is None


@pytest.mark.parametrize("form", REFUSED)
def test_what_gives_no_function_is_refused(tmp_path: Path, form: str) -> None:
    source, problem = REFUSED[form]
    assert check(tmp_path, source) == problem
    assert broken(source, "make"), "the test case itself works when run"


def test_every_binding_form_nested_in_every_block_is_accepted(tmp_path: Path) -> None:
    blocks = ["if x:\n{}", "if x:\n    pass\nelse:\n{}", "try:\n{}except Exception:\n    pass\n",
              "for _ in y:\n{}", "while z:\n{}    break\n", "with w:\n{}",
              "match v:\n    case 1:\n{}"]
    for form, source in BINDINGS.items():
        if form in ("does-not-parse", "null-byte", "encoding-cookie"):
            continue
        for block in blocks:
            inner = textwrap.indent(source, "        " if "case" in block else "    ")
            text = block.format(inner)
            assert check(tmp_path, text) is None, (form, text)


# ---------------------------------------------------------------- property: never a false refusal


def broken(source: str, name: str) -> bool:
    """Whether the module, run, gives no function `name` to call."""
    module = types.ModuleType("generated")
    exec(compile(source, "generated.py", "exec"), module.__dict__)  # noqa: S102 - our own text
    fn = getattr(module, name, None)
    return fn is None or not callable(fn) or inspect.iscoroutinefunction(fn)


NAME = "make"
_BINDS = [
    f"def {NAME}(ctx):\n    return 1\n",
    f"async def {NAME}(ctx):\n    return 1\n",
    f"class {NAME}:\n    pass\n",
    f"{NAME} = len\n",
    f"{NAME} = 3\n",
    f"{NAME} = 'text'\n",
    f"{NAME} = None\n",
    f"{NAME} = [1]\n",
    f"{NAME}: int = 3\n",
    f"{NAME}: int\n",
    f"({NAME} := len)\n",
    f"[{NAME} := f for f in [len]]\n",
    f"from os.path import join as {NAME}\n",
    f"import os.path as {NAME}\n",
    f"for {NAME} in [len]:\n    pass\n",
    f"{NAME}, _other = len, 1\n",
    f"try:\n    raise ValueError\nexcept ValueError as {NAME}:\n    pass\n",
    f"match len:\n    case {NAME}:\n        pass\n",
    f"def _set():\n    global {NAME}\n    {NAME} = len\n_set()\n",
    f"globals()['{NAME}'] = len\n",
    f"exec('{NAME} = len')\n",
    f"del {NAME}\n",
    "def __getattr__(name):\n    return len\n",
    "from os.path import *\n",
]
_NOISE = [
    "x = 1\n", "def other(ctx):\n    return 1\n", f"class K:\n    {NAME} = len\n",
    f"def g():\n    {NAME} = 1\n", f"y = [{NAME} for {NAME} in []]\n", "import os\n",
    f"'''\ndef {NAME}(ctx): ...\n'''\n",
]


@st.composite
def modules(draw: st.DrawFn) -> str:
    statements = draw(st.lists(st.sampled_from(_BINDS + _NOISE), max_size=6))
    text = ""
    for statement in statements:
        wrap = draw(st.sampled_from(["", "if True:\n", "if False:\n", "try:\n"]))
        if not wrap:
            text += statement
            continue
        text += wrap + textwrap.indent(statement, "    ")
        if wrap == "try:\n":
            text += "except Exception:\n    pass\n"
        elif draw(st.booleans()):
            text += "else:\n" + textwrap.indent(draw(st.sampled_from(_BINDS + _NOISE)), "    ")
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=modules())
def test_a_refused_name_is_really_no_function(tmp_path: Path, source: str) -> None:
    found = check(tmp_path, source, NAME)
    if found is None:
        return
    module = types.ModuleType("generated")
    try:
        exec(compile(source, "generated.py", "exec"), module.__dict__)  # noqa: S102
    except NameError:  # `del make` with nothing bound: the module does not load at all
        return
    fn = getattr(module, NAME, _MISSING)
    if found == "missing":
        assert fn is _MISSING, source
    elif found == "async":  # unless a condition left every binding of it out
        assert fn is _MISSING or inspect.iscoroutinefunction(fn), source
    else:
        assert fn is _MISSING or not callable(fn), source


_MISSING = object()
