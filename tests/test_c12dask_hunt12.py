"""Found by the hunt on the Dask code bundle (issue 12): what a worker keeps of a project once
its tasks are done."""

from __future__ import annotations

from test_c12dask_bundle import drive


def test_a_worker_done_with_a_build_serves_no_project_module_to_other_code() -> None:
    # a long-lived worker serves other Dask work too: once no task of the bundle runs, an
    # import made outside dd-build's tasks gets what the worker has installed, not the
    # project's module of the same name (here: the standard library's `code`, and a name
    # nothing installs)
    out = drive('''
        files = {"code/__init__.py": "X = 1\\n", "utils.py": "Y = 2\\n",
                 "gen.py": "def f(ctx):\\n    import code, utils\\n    return code.X + utils.Y\\n"}
        out["value"] = call(bundle(files), "gen.py:f", None)
        import code
        out["code"] = getattr(code, "__file__", None)
        try:
            import utils
            out["utils"] = utils.__file__
        except ModuleNotFoundError:
            out["utils"] = None
    ''')
    assert out["value"] == 3
    assert out["code"] is not None and not out["code"].startswith("/nonexistent/")
    assert out["utils"] is None


def test_a_sys_path_entry_added_by_an_older_version_is_not_kept_for_the_next() -> None:
    # version 1 of the stage file puts lib/ on sys.path; version 2 no longer does: as in a
    # local build, version 2's `import mylib` fails, whatever version 1 did on this worker
    out = drive('''
        import sys
        old = {"lib/mylib.py": "V = 1\\n",
               "gen.py": "import os, sys\\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), 'lib'))\\n"
                         "def f(ctx):\\n    import mylib\\n    return mylib.V\\n"}
        new = dict(old, **{"gen.py": "def f(ctx):\\n    import mylib\\n    return mylib.V\\n"})
        out["old"] = call(bundle(old), "gen.py:f", None)
        try:
            out["new"] = call(bundle(new), "gen.py:f", None)
        except Exception as exc:
            out["new"] = type(exc).__name__
    ''')
    assert out["old"] == 1
    assert out["new"] != 1  # the user's ModuleNotFoundError, as dd-build reports it
