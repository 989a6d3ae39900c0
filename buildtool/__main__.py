"""`python -m buildtool`, and the `dd-build` command (`buildtool.__main__:main`).

`dd-build --version` alone is answered here, before the CLI is imported (argparse, the
dataclasses and the rest cost more than the interpreter's own start-up); every other command
line, `--version` with other arguments included, goes to `cli.main`."""

import os
import sys


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        return _version()
    import gc

    # Importing the CLI makes thousands of objects that live as long as the process, and no
    # garbage: the cyclic collector would walk them again and again. Paused meanwhile, then
    # they go straight to the oldest generation (freeze, then unfreeze), as
    # execute._no_cycle_collection does for planning. Nothing is kept from being collected.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from .cli import main as cli_main
    finally:
        gc.freeze()
        gc.unfreeze()
        if collecting:
            gc.enable()
    return cli_main()


def _version() -> int:
    """Print `dd-build VERSION` as cli.main does: on stdout, and silently nowhere when the
    reader went away or stdout is closed."""
    from . import __version__

    try:
        os.write(1, f"dd-build {__version__}\n".encode())
    except OSError:  # a broken pipe, or no stdout: nothing to say it on
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
