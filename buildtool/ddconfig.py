"""A `datadesigner:` stage's config file: read as dd-build hands it to Data Designer, and
compared with the config its last run used, column by column, for `--explain` and `status`.

Reading needs PyYAML only, never Data Designer (a null build imports none of it). The config
file is the stage's code: any change of its bytes reruns the stage, and the reason names what
changed: `configs/answers.yaml: column 'answer': prompt changed: 1 line changed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StageFailed

if TYPE_CHECKING:
    from .facts import StageFacts
    from .reasons import Reason

_PARAM = re.compile(r"\{\{\s*params\.([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_LIKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")  # OPENAI_API_KEY, shown in errors
_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def load_config(project_dir: Path, path: str, params: dict[str, Any], stage: str
                ) -> dict[str, Any]:
    """The config file as a mapping, with each `{{ params.KEY }}` replaced by the stage's
    parameter (parse_config)."""
    try:
        text = (project_dir / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageFailed(f"cannot read the Data Designer config {path}: {exc}", stage=stage,
                          key="datadesigner") from exc
    return parse_config(text, path, params, stage)


def parse_config(text: str, path: str, params: dict[str, Any], stage: str) -> dict[str, Any]:
    """The config as a mapping. `{{ params.KEY }}` is replaced after the file is parsed, so no
    value can break its YAML: in a string it becomes the param's text (a string as it is,
    anything else as JSON); a plain (unquoted) value that is only the placeholder becomes the
    param's value itself (`values: {{ params.fields }}` → a list)."""
    import yaml

    found: list[str] = []
    salt = "x" * next(i for i in range(len(text) + 2) if f"ddbuildparam{'x' * i}q" not in text)
    token = f"ddbuildparam{salt}q"

    def mark(match: re.Match[str]) -> str:
        found.append(match.group(1))
        return f"{token}{len(found) - 1}z"

    loader = yaml.SafeLoader(_PARAM.sub(mark, text))
    loader.name = path  # its error marks name the file
    try:
        node = loader.get_single_node()
        if node is not None:
            node = _Substitution(re.compile(f"{token}(\\d+)z"), found, params, path,
                                 stage).node(node)
        config = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise StageFailed(f"the Data Designer config {path} is not valid YAML or JSON: "
                          f"{_unmarked(str(exc), token, found)}", stage=stage,
                          key="datadesigner") from exc
    finally:
        loader.dispose()
    if not isinstance(config, dict):
        raise StageFailed(f"the Data Designer config {path} must be a mapping (columns, "
                          "model_configs, …)", stage=stage, key="datadesigner")
    return json.loads(json.dumps(config, default=str))  # plain JSON, as the record keeps it


def _unmarked(text: str, token: str, found: list[str]) -> str:
    """A YAML error's text as the file says it (its placeholders back in place)."""
    return re.sub(f"{token}(\\d+)z", lambda m: f"{{{{ params.{found[int(m.group(1))]} }}}}",
                  text)


class _Substitution:
    """Puts each param in place of its mark in a composed YAML document."""

    def __init__(self, marks: re.Pattern[str], names: list[str], params: dict[str, Any],
                 path: str, stage: str) -> None:
        self.marks, self.names, self.params = marks, names, params
        self.path, self.stage = path, stage

    def node(self, node: Any) -> Any:
        import yaml

        if isinstance(node, yaml.MappingNode):
            node.value = [(self.node(k), self.node(v)) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            node.value = [self.node(v) for v in node.value]
        elif isinstance(node, yaml.ScalarNode) and self.marks.search(node.value):
            whole = self.marks.fullmatch(node.value)
            if whole and node.style is None:  # unquoted: the value itself
                value = self.value(int(whole.group(1)))
                if not isinstance(value, str):
                    return yaml.compose(json.dumps(value), Loader=yaml.SafeLoader)
            node.value = self.marks.sub(lambda m: self.text(int(m.group(1))), node.value)
            node.tag = "tag:yaml.org,2002:str"
        return node

    def text(self, index: int) -> str:
        value = self.value(index)
        return value if isinstance(value, str) else json.dumps(value)

    def value(self, index: int) -> Any:
        dotted = self.names[index]
        value: Any = self.params
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise StageFailed(
                    f"{self.path}: {{{{ params.{dotted} }}}} names no parameter of the stage "
                    f"({_have('params', self.params)})", stage=self.stage, key="params",
                    hint=f"add `{dotted}` under the stage's params, or fix the name")
            value = value[part]
        return value


def _have(what: str, names: Any) -> str:
    names = list(names)
    return f"its {what}: {', '.join(map(str, names))}" if names else f"it has no {what}"


# ------------------------------------------------------------------ model providers

def parse_providers(text: str, models: str, stage: str) -> list[dict[str, Any]]:
    """The providers of a `models:` file (Data Designer's model_providers.yaml format), each
    checked: a name, an endpoint, and an `api_key` that names an environment variable (or no
    `api_key`: a server that needs none). A key written in the file is refused: dd-build
    hands the child process the variable's name, and the key reaches it through its
    environment only, never through a file."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # not its text: the line it shows may hold a key
        raise StageFailed(f"cannot read the model providers {models}: {_yaml_problem(exc)}",
                          stage=stage, key="models") from None
    providers = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(providers, list) or not all(isinstance(p, dict) for p in providers):
        raise StageFailed(f"{models} must hold `providers: [{{name, endpoint, "
                          "provider_type, api_key}}]`", stage=stage, key="models")
    if isinstance(data, dict) and set(data) - {"providers"}:
        raise StageFailed(f"{models} holds {_listed(set(data) - {'providers'})}: a models "
                          "file holds only `providers`", stage=stage, key="models",
                          hint="model configs and their settings belong in the config's "
                               "`model_configs` (fingerprinted there)")
    for i, provider in enumerate(providers):
        name = provider.get("name")
        if not isinstance(name, str) or not name:
            raise StageFailed(f"{models}: provider {i + 1} has no `name`", stage=stage,
                              key="models")
        if any(p.get("name") == name for p in providers[:i]):
            raise StageFailed(f"{models}: two providers are named '{name}' (which one a model "
                              "config means would be a guess)", stage=stage, key="models",
                              hint="give each provider a name of its own")
        extra = set(provider) - _PROVIDER_KEYS
        if extra:  # they reach the model, but the models file is not fingerprinted
            raise StageFailed(
                f"{models}: provider '{name}' sets {_listed(extra)}, which would change what "
                "the model returns without a rerun (the models file says only where models "
                "are served, and is not fingerprinted)", stage=stage, key="models",
                hint="keep name, endpoint, provider_type and api_key here; put generation "
                     "settings in the config's `model_configs` (`inference_parameters`)")
        if not isinstance(provider.get("endpoint"), str):
            raise StageFailed(f"{models}: provider '{name}' has no `endpoint` (a URL)",
                              stage=stage, key="models")
        if not isinstance(provider.get("provider_type", ""), str):
            raise StageFailed(f"{models}: provider '{name}': `provider_type` must be a string "
                              "(openai, …)", stage=stage, key="models")
        key = provider.get("api_key")
        if key is not None and (not isinstance(key, str) or not _ENV_NAME.fullmatch(key)):
            # never shown: it may be the key itself
            raise StageFailed(
                f"{models}: provider '{name}': api_key must name an environment variable "
                "(letters, digits and _), not hold the key itself", stage=stage, key="models",
                hint=f"put the key in an environment variable (export {_env_name(name)}=…) "
                     f"and write `api_key: {_env_name(name)}`; dd-build never writes a key "
                     "to a file")
    return providers


_PROVIDER_KEYS = frozenset({"name", "endpoint", "provider_type", "api_key"})


def _yaml_problem(exc: Exception) -> str:
    """What a YAML error says is wrong and where (line, column), without the lines of the
    file it would quote (a key written in the file would be shown)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem or 'not valid YAML'}{where}"


def _listed(keys: set[Any]) -> str:
    return ", ".join(f"`{k}`" for k in sorted(map(str, keys)))


def _env_name(provider: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", provider).upper() + "_API_KEY"


def resolve_providers(providers: list[dict[str, Any]], models: str, stage: str,
                      environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The providers as the stage runs them: each `api_key` variable must be set (its value
    stays in the environment), `${VAR}` in an endpoint is replaced by the variable's value."""
    out = []
    for provider in providers:
        name, key = provider["name"], provider.get("api_key")
        if key is not None and key not in environ:
            if not _VAR_LIKE.fullmatch(key):  # may be a key itself (`abc123`): not shown
                raise StageFailed(
                    f"{models}: provider '{name}': api_key names no environment variable that "
                    "is set (its value is not shown: it may be a key itself)", stage=stage,
                    key="models", hint=f"put the key in an environment variable (export "
                                       f"{_env_name(name)}=…) and write `api_key: "
                                       f"{_env_name(name)}`")
            raise StageFailed(
                f"{models}: provider '{name}': api_key names the environment variable {key}, "
                "which is not set", stage=stage, key="models",
                hint=f"export {key}=… (the key) before the build, or name a variable that is "
                     "set; a server that needs no key: remove `api_key`")
        out.append({**provider, "endpoint": _expand(provider["endpoint"], name, models, stage,
                                                    environ)})
    return out


def _expand(endpoint: str, provider: str, models: str, stage: str,
            environ: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        var = match.group(1) if match.group(1) is not None else match.group(2)
        if var not in environ:
            raise StageFailed(
                f"{models}: provider '{provider}': its endpoint uses ${{{var}}}, which is not "
                "set", stage=stage, key="models", hint=f"export {var}=… before the build")
        return environ[var]

    return _ENV_REF.sub(value, endpoint)


def check_model_providers(config: dict[str, Any], path: str, providers: list[dict[str, Any]],
                          models: str | None, stage: str) -> None:
    """Each model config of the config names a provider of the `models:` file."""
    configs = config.get("model_configs")
    names = [p["name"] for p in providers]
    for model in configs if isinstance(configs, list) else []:
        wanted = model.get("provider") if isinstance(model, dict) else None
        if not isinstance(wanted, str) or wanted in names:
            continue
        alias = f"model '{model.get('alias')}'" if model.get("alias") else "a model"
        if models is None:
            raise StageFailed(f"{path}: {alias} uses provider '{wanted}', and the stage names "
                              "no `models:` file", stage=stage, key="models",
                              hint="add `models: FILE` (Data Designer's model_providers.yaml "
                                   f"format) with a provider named '{wanted}'")
        raise StageFailed(f"{path}: {alias} uses provider '{wanted}', which {models} does not "
                          f"have ({_have('providers', names)})", stage=stage,
                          key="datadesigner", hint=f"name one of them, or add '{wanted}' to "
                                                   f"{models}")


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
