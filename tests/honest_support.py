"""`python tests/honest_support.py ARGS`: `buildtool.cli.main(ARGS)` with one hold added, for
tests/test_honest_status.py. With HOLD_FILE set, recording a stage `interrupted` first writes
HOLD_FILE and waits until HOLD_FILE.release exists, so a test can send a second SIGINT while
dd-build records the first one. Nothing else differs from `python -m buildtool`."""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any


def install() -> None:
    from buildtool import stagerun

    real = stagerun.StageRun.finish

    @functools.wraps(real)
    def finish(self: Any, status: str, *args: Any, **kwargs: Any) -> Any:
        hold = os.environ.get("HOLD_FILE")
        if hold and status == "interrupted":
            marker = Path(hold)
            marker.write_text(str(os.getpid()))
            release = marker.with_name(marker.name + ".release")
            while not release.exists():  # a wait for the test, not a timing
                time.sleep(0.01)
        return real(self, status, *args, **kwargs)

    stagerun.StageRun.finish = finish  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from buildtool.cli import main

    sys.exit(main(sys.argv[1:]))
