"""The process that runs one `datadesigner:` stage: `python -m buildtool.kinds.ddchild FD`.

Started by kinds/datadesigner.py in the stage's `datadesigner/` folder (its current folder),
with a hermetic environment (DATA_DESIGNER_HOME there, telemetry and plugins off): Data
Designer reads those variables when it is imported, so it runs in a process of its own, never
in dd-build's. It reads `request.json`, runs `DataDesigner.create` into `run/dataset/`
(resuming from the batches found there when asked), and reports on file descriptor FD, one
JSON object a line: `library` (the fingerprint key and state of the installed Data Designer),
`config` (its config fingerprint), one `batch` per finished batch file, then `done`, or
`error` (the exception's type and message) before it exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

DATASET = "dataset"  # run/<DATASET>/parquet-files/batch_NNNNN.parquet
RUN = "run"
# A provider for configs that call no model: DataDesigner refuses an empty list.
_NO_MODELS = {"name": "dd-build-no-models", "endpoint": "http://127.0.0.1:9/v1",
              "provider_type": "openai", "api_key": "DD_BUILD_NO_MODELS_KEY"}


def _die_with_parent() -> None:
    """A SIGKILLed dd-build must not leave Data Designer writing batches (Linux only; elsewhere
    the child ends when its report pipe breaks)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _send(out: IO[str], event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


def run(request: dict[str, Any], out: IO[str]) -> None:
    from data_designer.config import (
        DataDesignerConfigBuilder,
        LocalFileSeedSource,
        ModelProvider,
        ResumeMode,
        RunConfig,
    )
    from data_designer.interface.data_designer import DataDesigner

    from ..external import fingerprint_loaded

    key, state = fingerprint_loaded("data_designer.interface.data_designer")
    _send(out, "library", key=key, state=state.to_json(),
          module="data_designer.interface.data_designer")
    # First: it seeds the (empty, hermetic) home with the library's default model configs,
    # which a config without `model_configs` then gets: every run the same fingerprint.
    providers = [ModelProvider(**p) for p in request.get("providers") or [_NO_MODELS]]
    designer = DataDesigner(artifact_path=RUN, model_providers=providers)
    builder = DataDesignerConfigBuilder.from_config(request["config"])
    if request.get("seed"):
        current = builder.build().seed_config
        options: dict[str, Any] = {}
        if current is not None:
            options = {"sampling_strategy": current.sampling_strategy,
                       "selection_strategy": current.selection_strategy}
        builder.with_seed_dataset(LocalFileSeedSource(path=request["seed"]), **options)
    _send(out, "config", fingerprint=builder.build().fingerprint())
    designer.set_run_config(RunConfig(buffer_size=request["buffer_size"],
                                      max_concurrent_row_groups=request["row_groups"],
                                      otel_metrics_port=None))
    designer.create(builder, num_records=request["num_records"], dataset_name=DATASET,
                    resume=ResumeMode.ALWAYS if request["resume"] else ResumeMode.NEVER,
                    on_batch_complete=lambda path: _send(out, "batch", path=str(path)))
    _send(out, "done")


def main(argv: list[str]) -> int:
    _die_with_parent()
    out = os.fdopen(int(argv[1]), "w", encoding="utf-8")
    with open("request.json", encoding="utf-8") as fh:
        request = json.load(fh)
    try:
        run(request, out)
    except Exception as exc:  # reported to dd-build, which fails the stage with it
        import traceback

        traceback.print_exc()  # into the stage's log
        _send(out, "error", type=type(exc).__name__, message=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
