"""Run configs: Python files in ``configs/`` whose ``get_config()`` returns an ``ml_collections.ConfigDict``.

A config is named by a path (``configs/demo.py``) or by its stem (``demo``), looked up in ``./configs`` and in
the repository's ``configs/``. ``--set key.path=value`` overrides are type-checked by ConfigDict, and a key
that does not exist is an error (a typo must not silently run the default).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import ml_collections

from jaxprobe.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def find_config(name: str | Path) -> Path:
    """Resolve a config path or stem to an existing ``.py`` file."""
    path = Path(name)
    candidates = [path] if path.suffix == ".py" else [Path("configs") / f"{name}.py", REPO_CONFIGS / f"{name}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in REPO_CONFIGS.glob("*.py") if not p.name.startswith("_"))
    raise ConfigError(f"no config {name!r} (looked for {', '.join(map(str, candidates))}); available: {available}")


def load_config_file(path: Path, argument: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"jaxprobe_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a broken user config: report it as such, whatever it raised
        raise ConfigError(f"config {path} failed to load: {type(error).__name__}: {error}") from error
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {path} defines no get_config() returning an ml_collections.ConfigDict")
    try:
        return module.get_config(argument) if argument else module.get_config()
    except ValueError as error:
        raise ConfigError(f"config {path.stem}:{argument}: {error}") from error


def load_study_models() -> dict[str, tuple[str, str]]:
    """configs/study.py's MODELS: study model name -> (hub id, config.json model_type)."""
    path = find_config("study")
    spec = importlib.util.spec_from_file_location("jaxprobe_config_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.MODELS)


def parse_value(text: str):
    """Python literal if it parses (``3``, ``0.1``, ``[1, 2]``, ``None``, ``True``), else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> None:
    """Apply one ``key.path=value`` to ``config`` in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key.path=value, got {assignment!r}")
    *parents, leaf = key.strip().split(".")
    node = config
    for part in parents:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"--set {key}: {part!r} is not a section of the config; sections: {sorted(node.keys())}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"--set {key}: no key {leaf!r}; keys here: {sorted(node.keys())}")
    try:
        node[leaf] = parse_value(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--set {key}={raw}: {error}") from error


def load_config(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Load a config by path or stem (``name:argument`` passes an argument to ``get_config``, e.g.
    ``study:lingshu_7b:busi``) and apply ``--set`` overrides in order."""
    name, _, argument = str(name).partition(":") if not Path(str(name)).is_file() else (name, "", "")
    config = load_config_file(find_config(name), argument or None)
    for assignment in overrides:
        apply_override(config, assignment)
    return config
