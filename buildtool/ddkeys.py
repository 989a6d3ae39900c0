"""Workflowfile values of `datadesigner:` stages: the config file and the `models:` file.

Checked when the Workflowfile is read (the file must be in the project and be a file), and
then read as YAML (stage_errors: params, providers, api_key names); never checked here against
Data Designer itself: that library is imported only when such a stage runs.
"""

from __future__ import annotations

from yaml.nodes import Node

from .claims import Claim
from .errors import StageFailed, WorkflowError
from .model import Stage
from .workflowrefs import LoadContext, rel_path
from .yamlsource import expect

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def parse_config_file(ctx: LoadContext, key: str, node: Node) -> str:
    """`datadesigner: configs/drafts.yaml`: a Data Designer config file of the project. It is
    the stage's code (its content is fingerprinted), so no stage may write it."""
    path = _project_file(ctx, key, node, "a Data Designer config file")
    if ctx.stage is not None:
        ctx.claims.code_files.append(Claim(path, ctx.stage, node, key))
    return path


def parse_models_file(ctx: LoadContext, key: str, node: Node) -> str:
    """`models: models.yaml`: providers in Data Designer's `model_providers.yaml` format."""
    return _project_file(ctx, key, node, "a model_providers.yaml file")


def _project_file(ctx: LoadContext, key: str, node: Node, what: str) -> str:
    text = expect(ctx, key, node, str, f"the path of {what} (a string)")
    path = rel_path(ctx, key, node, text)
    if not path.lower().endswith(CONFIG_SUFFIXES):
        raise ctx.error(f"`{key}` must name {what} (.yaml, .yml or .json), got `{text}`", node,
                        key=key)
    if not ctx.fs.is_file(path):
        raise ctx.error(f"no file `{text}` for `{key}`", node, key=key,
                        hint="check the path: it is relative to the Workflowfile's folder "
                             f"({ctx.project_dir})")
    return path


def stage_errors(ctx: LoadContext, stage: Stage, broken: set[str]) -> list[WorkflowError]:
    """What the Workflowfile's reading can tell of a datadesigner stage without Data Designer
    nor the environment: its config parses with its params (`{{ params.X }}` names one), the
    `models:` file's providers are well formed (an `api_key` names a variable), and each model
    config names one of them. Whether the variables are set is checked when the stage starts."""
    from .ddconfig import check_model_providers, parse_config, parse_providers

    if broken & {"datadesigner", "models", "params"}:
        return []  # their own errors are reported
    try:
        config = parse_config(_text(ctx, stage.target), stage.target, stage.params, stage.name)
        providers = [] if stage.models is None else parse_providers(
            _text(ctx, stage.models, "models"), stage.models, stage.name)
        check_model_providers(config, stage.target, providers, stage.models, stage.name)
    except StageFailed as exc:
        key = exc.key if exc.key is not None and exc.key in stage.locations else "datadesigner"
        at = stage.locations[key]
        return [WorkflowError(exc.message, file=ctx.display, line=at.line, column=at.column,
                              stage=stage.name, key=key, hint=exc.hint)]
    return []


def _text(ctx: LoadContext, path: str, key: str = "datadesigner") -> str:
    """The text of the file of `key` (the error of an unreadable one is at that key)."""
    data = ctx.fs.read_bytes(path)
    if data is None:
        raise StageFailed(f"cannot read {path}", key=key)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StageFailed(f"{path} is not UTF-8 text: {exc}", key=key) from exc
