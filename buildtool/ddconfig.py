"""A `datadesigner:` stage's config file: read as dd-build hands it to Data Designer, and
compared with the config its last run used, column by column, for `--explain` and `status`.

Reading needs PyYAML only, never Data Designer (a null build imports none of it). The config
file is the stage's code: any change of its bytes reruns the stage, and the reason names what
changed: `configs/answers.yaml: column 'answer': prompt changed: 1 line changed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StageFailed

if TYPE_CHECKING:
    from .facts import StageFacts
    from .reasons import Reason

_PARAM = re.compile(r"\{\{\s*params\.([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")


def load_config(project_dir: Path, path: str, params: dict[str, Any], stage: str
                ) -> dict[str, Any]:
    """The config file as a mapping, with each `{{ params.KEY }}` replaced by the stage's
    parameter (a string as it is, anything else as JSON, which YAML reads back)."""
    import yaml

    try:
        text = (project_dir / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageFailed(f"cannot read the Data Designer config {path}: {exc}", stage=stage,
                          key="datadesigner") from exc
    text = _PARAM.sub(lambda m: _param_text(m.group(1), params, path, stage), text)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StageFailed(f"the Data Designer config {path} is not valid YAML or JSON: {exc}",
                          stage=stage, key="datadesigner") from exc
    if not isinstance(config, dict):
        raise StageFailed(f"the Data Designer config {path} must be a mapping (columns, "
                          "model_configs, …)", stage=stage, key="datadesigner")
    return json.loads(json.dumps(config, default=str))  # plain JSON, as the record keeps it


def _param_text(dotted: str, params: dict[str, Any], path: str, stage: str) -> str:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StageFailed(f"{path}: {{{{ params.{dotted} }}}} names no parameter of the "
                              "stage", stage=stage, key="params",
                              hint=f"add `{dotted}` under the stage's params")
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value)


def config_reasons(facts: StageFacts, reasons: Sequence[Reason], project_dir: Path
                   ) -> list[Reason]:
    """`reasons` with the one saying the config file changed replaced by what changed in it
    (column by column, field by field, old → new), when the last run's config is recorded."""
    path = facts.spec.get("datadesigner")
    record = facts.record
    stored = (record.extra.get("datadesigner") or {}).get("config") if record else None
    out: list[Reason] = []
    for reason in reasons:
        if reason.code != "code_changed" or reason.detail.get("file") != path or \
                not isinstance(stored, dict) or not reason.message.endswith("changed"):
            out.append(reason)
            continue
        try:
            now = load_config(project_dir, str(path), facts.spec.get("params") or {},
                              facts.name)
        except StageFailed:  # the build says what is wrong with it
            out.append(reason)
            continue
        found = [replace(r, step=reason.step) for r in diff_configs(str(path), stored, now)]
        out += found or [replace(reason, message=f"{reason.message} (no column or setting "
                                                 "differs: comments or formatting)")]
    return out


def diff_configs(path: str, old: dict[str, Any], new: dict[str, Any]) -> Iterator[Reason]:
    """One reason per changed field of a column (by name), per added or removed column, and
    per changed top-level setting (model_configs, processors, seed_config, …)."""
    from .reasons import Reason

    before, after = _columns(old), _columns(new)
    for name in list(before) + [n for n in after if n not in before]:
        detail = {"file": path, "column": name}
        if name not in after:
            yield Reason("code_changed", f"{path}: column '{name}' removed", detail)
        elif name not in before:
            yield Reason("code_changed", f"{path}: column '{name}' added", detail)
        else:
            yield from _field_reasons(f"{path}: column '{name}': ", detail, before[name],
                                      after[name])
    if list(before) != list(after) and set(before) == set(after):
        yield Reason("code_changed", f"{path}: column order changed: {', '.join(before)} → "
                     f"{', '.join(after)}", {"file": path})
    rest_old = {k: v for k, v in old.items() if k != "columns"}
    rest_new = {k: v for k, v in new.items() if k != "columns"}
    yield from _field_reasons(f"{path}: ", {"file": path}, rest_old, rest_new)


def _columns(config: dict[str, Any]) -> dict[str, Any]:
    columns = config.get("columns")
    if not isinstance(columns, list):
        return {}
    return {str(c.get("name", i)) if isinstance(c, dict) else str(i): c
            for i, c in enumerate(columns)}


def _field_reasons(prefix: str, detail: dict[str, Any], old: Any, new: Any
                   ) -> Iterator[Reason]:
    from .reasons import _spec_reason, diff_values

    if not isinstance(old, dict) or not isinstance(new, dict):
        old, new = {"value": old}, {"value": new}
    # diff_values walks the top level and `params.*` (a sampler's params) key by key
    for key, a, b in diff_values(old, new):
        spec = _spec_reason(key, a, b)
        yield replace(spec, code="code_changed", message=prefix + spec.message,
                      detail={**detail, **spec.detail})
