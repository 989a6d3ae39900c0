"""Workflowfile values of `datadesigner:` stages: the config file and the `models:` file.

Checked when the Workflowfile is read (the file must be in the project and be a file); never
parsed here as a Data Designer config: that library is imported only when such a stage runs.
"""

from __future__ import annotations

from yaml.nodes import Node

from .claims import Claim
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
