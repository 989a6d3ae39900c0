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
    code = cli_main()
    if code in _INTERRUPTED:
        _exit_now(code)
    return code


# An interrupted build ends here, not by the interpreter's shutdown: batch threads still in a
# model call were abandoned (generate.py), and threads that stage code started itself (its
# own thread pool) would be waited for at exit — the build would hang on, paying for calls
# whose results are dropped — and a daemon thread that wakes during finalization may abort
# the interpreter. Everything a build owes the disk is written by then; the lock is released.
_INTERRUPTED = (130, 143, 129)  # SIGINT, SIGTERM, SIGHUP


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed stream, a reader gone: nothing to flush to
            pass
    os._exit(code)


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
