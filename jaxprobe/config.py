"""Run configs: Python files in ``configs/`` whose ``get_config()`` returns an ``ml_collections.ConfigDict``.

A config is named by a path (``configs/demo.py``) or by its stem (``demo``), looked up in ``./configs`` and in
the configs shipped with jaxprobe. ``--set key.path=value`` overrides are type-checked by ConfigDict, and a key
that does not exist is an error (a typo must not silently run the default). Every value of a run config is then
checked against ``RULES`` (valid ranges as data, each message naming its range) before any work starts, so an
out-of-range value never surfaces later as a traceback or, worse, as a silently odd result.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import numbers
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from jaxprobe.errors import ConfigError
from jaxprobe.features import FEATURE_DTYPES
from jaxprobe.finetune.settings import ANSWER_FORMS, MONITORS, VISION_METHODS

PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"  # where an installed wheel carries configs/
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # a source checkout (or an editable install)
BASE_CONFIG = "demo"  # the base of every run config: its keys and types are the schema


def shipped_configs() -> Path:
    """The configs that come with jaxprobe: inside the package when installed from a wheel, else the checkout's."""
    return PACKAGE_CONFIGS if PACKAGE_CONFIGS.is_dir() else REPO_CONFIGS


def find_config(name: str | Path) -> Path:
    """Resolve a config path or stem to an existing ``.py`` file (``./configs`` first, then the shipped ones)."""
    path = Path(name)
    candidates = [path] if path.suffix == ".py" else [Path("configs") / f"{name}.py",
                                                      shipped_configs() / f"{name}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in shipped_configs().glob("*.py") if not p.name.startswith("_"))
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
    ``study:lingshu_7b:busi``), apply ``--set`` overrides in order, and validate the result."""
    name, _, argument = str(name).partition(":") if not Path(str(name)).is_file() else (name, "", "")
    config = load_config_file(find_config(name), argument or None)
    for assignment in overrides:
        apply_override(config, assignment)
    validate_config(config)
    return config


# ---------------------------------------------------------------------------------------------------------------
# Validation: every value of a run config against its valid range, before any work starts.


@dataclasses.dataclass(frozen=True)
class Rule:
    """One config key, its valid range in words (shown in the error), and the check of a value."""

    key: str  # dotted path, e.g. "capture.batch_size"
    valid: str
    check: Callable[[Any], bool]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low


def _number_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def check(value) -> bool:
        if not _is_number(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below

    return check


def _text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _site_globs(value) -> bool:
    return isinstance(value, tuple | list) and len(value) > 0 and all(_text(glob) for glob in value)


def _probe_kinds(value) -> bool:
    kinds = ("ridge", "logistic", "mlp")
    return isinstance(value, tuple | list) and 0 < len(value) == len(set(value)) and all(k in kinds for k in value)


def _lambdas(value) -> bool:
    return (isinstance(value, tuple | list) and 0 < len(value) == len(set(value))
            and all(_is_number(lam) and lam > 0 for lam in value))


def _ints(value) -> bool:
    return isinstance(value, tuple | list) and len(value) > 0 and all(_is_int(item) for item in value)


def _question(value) -> bool:
    """The answer options are listed through ``{options}``; any other field would fail at format time."""
    if not _text(value) or "{options}" not in value:
        return False
    try:
        value.format(options="A. x")
    except (KeyError, IndexError, ValueError):
        return False
    return True


def _known_dataset(value) -> bool:
    from jaxprobe.data.api import DATASETS  # lazy: TFDS is slow to import and only needed for this one check

    return value in DATASETS


def _split_strategy(value) -> bool:
    from jaxprobe.data.splits import STRATEGIES

    return value in STRATEGIES


def _boolean(value) -> bool:
    return isinstance(value, bool)


def _regexes(value) -> bool:
    """A non-empty tuple of valid regular expressions (LoRA targets over '/'-joined param paths)."""
    if not (isinstance(value, tuple | list) and value and all(_text(pattern) for pattern in value)):
        return False
    try:
        for pattern in value:
            re.compile(pattern)
    except re.error:
        return False
    return True


def _lora_rules(section: str) -> tuple[Rule, ...]:
    """The rules of one LoRA section (``finetune.lora``, ``finetune.vision.lora``)."""
    return (Rule(f"{section}.rank", "an integer >= 1", _int_at_least(1)),
            Rule(f"{section}.alpha", "a number > 0 (the adapter's scale is alpha / rank)",
                 _number_in(0, float("inf"), low_open=True)),
            Rule(f"{section}.dropout", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
            Rule(f"{section}.targets", "a non-empty tuple of regexes fully matching '/'-joined kernel paths, e.g. "
                                       "('decoder/layers/self_attn/q_proj/kernel',)", _regexes))


def _schedule_rules(section: str) -> tuple[Rule, ...]:
    """The rules of one training schedule (``finetune.train``, ``finetune.vision.train``)."""
    return (Rule(f"{section}.learning_rate", "a number > 0", _number_in(0, float("inf"), low_open=True)),
            Rule(f"{section}.epochs", "an integer >= 1", _int_at_least(1)),
            Rule(f"{section}.batch_size", "an integer >= 1", _int_at_least(1)),
            Rule(f"{section}.grad_accum", "an integer >= 1 (micro-batches per optimizer step)", _int_at_least(1)),
            Rule(f"{section}.warmup_ratio", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
            Rule(f"{section}.weight_decay", "a number >= 0", _number_in(0, float("inf"))),
            Rule(f"{section}.max_grad_norm", "a number > 0", _number_in(0, float("inf"), low_open=True)),
            Rule(f"{section}.eval_every", "an integer >= 0 (0: every epoch)", _int_at_least(0)),
            Rule(f"{section}.patience", "an integer >= 0 (0: no early stopping)", _int_at_least(0)),
            Rule(f"{section}.monitor", "one of " + ", ".join(MONITORS), _one_of(*MONITORS)),
            Rule(f"{section}.save_every", "an integer >= 1 (optimizer steps)", _int_at_least(1)),
            Rule(f"{section}.seed", "an integer >= 0", _int_at_least(0)))


FINETUNE_RULES: tuple[Rule, ...] = (
    Rule("finetune.enabled", "True or False", _boolean),
    Rule("finetune.answer", "one of " + ", ".join(ANSWER_FORMS), _one_of(*ANSWER_FORMS)),
    Rule("finetune.remat", "True or False", _boolean),
    Rule("finetune.export_peft", "True or False", _boolean),
    *_lora_rules("finetune.lora"),
    *_schedule_rules("finetune.train"),
    Rule("finetune.vision.enabled", "True or False", _boolean),
    Rule("finetune.vision.method", "one of " + ", ".join(VISION_METHODS), _one_of(*VISION_METHODS)),
    *_lora_rules("finetune.vision.lora"),
    *_schedule_rules("finetune.vision.train"),
)


RULES: tuple[Rule, ...] = (
    Rule("workdir", "a non-empty directory path", _text),
    Rule("data.name", "a dataset jaxprobe knows (see `jaxprobe data list`)", _known_dataset),
    Rule("data.config", "None, a builder config name, or a synthetic_lesions spec dict",
         lambda v: v is None or _text(v) or isinstance(v, Mapping | ml_collections.ConfigDict)),
    Rule("data.manual_dir", "None or a non-empty path", _optional(_text)),
    Rule("data.data_dir", "None or a non-empty path", _optional(_text)),
    Rule("split.strategy", "one of stratified, grouped, official", _split_strategy),
    Rule("split.val_fraction", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
    Rule("split.test_fraction", "a number in (0, 1)", _number_in(0, 1, low_open=True, high_open=True)),
    Rule("split.seed", "an integer >= 0", _int_at_least(0)),
    Rule("model.checkpoint", "a directory, a hub id or tiny:<family>", _text),
    Rule("model.family", "None (read from config.json) or a model_type such as qwen2_5_vl", _optional(_text)),
    Rule("model.revision", "None or a hub revision", _optional(_text)),
    Rule("model.dtype", "float32 or bfloat16", _one_of("float32", "bfloat16")),
    Rule("model.cache", "True or False", lambda v: isinstance(v, bool)),
    Rule("model.cache_dir", "None or a non-empty path", _optional(_text)),
    Rule("model.adapter", "None or the directory `jaxprobe finetune` wrote (<workdir>/finetune/adapter)",
         _optional(_text)),
    Rule("mesh.data", "None (every device not on the model axis) or an integer >= 1", _optional(_int_at_least(1))),
    Rule("mesh.model", "an integer >= 1", _int_at_least(1)),
    Rule("capture.sites", "a non-empty tuple of site globs, e.g. ('vision.*', 'llm.*.last_token')", _site_globs),
    Rule("capture.resolution", "an integer >= 1 (pixels per side) or 'native'",
         lambda v: v == "native" or _int_at_least(1)(v)),
    Rule("capture.bucket_step", "an integer >= 1 (tokens per side)", _int_at_least(1)),
    Rule("capture.batch_size", "an integer >= 1", _int_at_least(1)),
    Rule("capture.chunk_rows", "an integer >= 1", _int_at_least(1)),
    Rule("capture.feature_dtype", "one of " + ", ".join(FEATURE_DTYPES), _one_of(*FEATURE_DTYPES)),
    Rule("capture.question", "text containing {options} and no other {field}", _question),
    Rule("capture.answer", "one of scores, generate, both", _one_of("scores", "generate", "both")),
    Rule("capture.generate.max_new_tokens", "an integer >= 1", _int_at_least(1)),
    Rule("capture.generate.temperature", "a number >= 0 (0: greedy)", _number_in(0, float("inf"))),
    Rule("capture.generate.top_p", "a number in (0, 1]", _number_in(0, 1, low_open=True)),
    Rule("capture.generate.seed", "an integer >= 0", _int_at_least(0)),
    Rule("capture.option_orders", "an integer >= 1", _int_at_least(1)),
    Rule("capture.paraphrases", "a tuple of question templates, each with {options} and no other {field}",
         lambda v: isinstance(v, tuple | list) and all(_question(text) for text in v)),
    Rule("probe.kinds", "a tuple of distinct kinds out of ridge, logistic, mlp", _probe_kinds),
    Rule("probe.sites", "a non-empty tuple of site globs, e.g. ('llm.*',)", _site_globs),
    Rule("probe.ridge_lambdas", "a tuple of distinct numbers > 0", _lambdas),
    Rule("probe.logistic_lambdas", "a tuple of distinct numbers > 0", _lambdas),
    Rule("probe.folds", "an integer >= 2", _int_at_least(2)),
    Rule("probe.grouped_folds", "True or False", lambda v: isinstance(v, bool)),
    Rule("probe.fold_scaling", "train (one decomposition per site) or fold (one per fold)", _one_of("train", "fold")),
    Rule("probe.seed", "an integer >= 0", _int_at_least(0)),
    Rule("probe.control_task", "True or False", lambda v: isinstance(v, bool)),
    Rule("probe.permutations", "an integer >= 0", _int_at_least(0)),
    Rule("probe.bootstrap", "an integer >= 0", _int_at_least(0)),
    Rule("probe.ci_level", "a number in (0, 1)", _number_in(0, 1, low_open=True, high_open=True)),
    Rule("probe.max_iter", "an integer >= 1", _int_at_least(1)),
    Rule("probe.tol", "a number in (0, 1)", _number_in(0, 1, low_open=True, high_open=True)),
    Rule("probe.memory_gb", "a number > 0 (GB of features and decompositions held at once)",
         _number_in(0, float("inf"), low_open=True)),
    Rule("probe.baseline_features", "None or the feature store of a random-weights model", _optional(_text)),
    Rule("probe.mlp_seeds", "a non-empty tuple of integers", _ints),
    Rule("probe.mlp_hidden", "an integer >= 1", _int_at_least(1)),
    Rule("probe.mlp_epochs", "an integer >= 1", _int_at_least(1)),
    Rule("scoring.kind", "a probe kind, e.g. logistic", _text),
    Rule("scoring.fhs_lambda", "a number >= 0", _number_in(0, float("inf"))),
    Rule("diagnosis.reference_accuracy", "None or an accuracy in (0, 1]", _optional(_number_in(0, 1, low_open=True))),
    Rule("diagnosis.vision_min_skill", "a number in [0, 1] (share of the way from chance to perfect accuracy)",
         _number_in(0, 1)),
    Rule("diagnosis.vision_margin", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
    Rule("diagnosis.connector_drop", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
    Rule("diagnosis.llm_drop", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
    Rule("diagnosis.answer_gap", "a number in [0, 1)", _number_in(0, 1, high_open=True)),
    Rule("diagnosis.min_test_images", "an integer >= 1", _int_at_least(1)),
    Rule("diagnosis.alpha", "a significance level in (0, 1)", _number_in(0, 1, low_open=True, high_open=True)),
    *FINETUNE_RULES,
)
RUN_SECTIONS = ("data", "split", "model", "mesh", "capture", "probe", "scoring", "diagnosis",  # + workdir
                "finetune")
OPEN_SECTIONS: tuple[str, ...] = ()  # sections whose keys no rule lists (none: ProbeSettings re-checks probe)


def _lookup(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _cross_key_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Checks that involve two keys at once."""
    problems = []
    val, test = config.split.val_fraction, config.split.test_fraction
    if _is_number(val) and _is_number(test) and val + test >= 1:
        problems.append(f"split.val_fraction + split.test_fraction = {val + test:g} leaves no training rows: "
                        "expected a sum < 1")
    kinds = tuple(config.probe.get("kinds", ()) or ())
    if kinds and config.scoring.kind not in kinds:
        problems.append(f"scoring.kind={config.scoring.kind!r} is not among probe.kinds {kinds}: expected one of them")
    if config.finetune.enabled and _is_number(val) and val <= 0:
        problems.append("finetune.enabled=True with split.val_fraction=0: fine-tuning stops early and keeps its "
                        "weights by the val split; expected split.val_fraction > 0")
    return problems


def _leaves(node: ml_collections.ConfigDict, prefix: str) -> list[str]:
    """Dotted paths of every value under ``node`` (nested sections such as capture.generate included)."""
    paths = []
    for key in node.keys():
        value = node[key]
        paths += _leaves(value, f"{prefix}{key}.") if isinstance(value, ml_collections.ConfigDict) else [prefix + key]
    return paths


def _has(config: ml_collections.ConfigDict, key: str) -> bool:
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def _schema_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Missing sections and keys, and keys no rule knows (a typo in a config file would run the default)."""
    problems = [f"section {section!r} is missing (configs/demo.py lists every section)"
                for section in RUN_SECTIONS if section not in config]
    if problems:
        return problems
    known = {rule.key for rule in RULES}
    problems += [f"{rule.key} is missing: expected {rule.valid}" for rule in RULES if not _has(config, rule.key)]
    for section in RUN_SECTIONS:
        if section in OPEN_SECTIONS or not isinstance(config[section], ml_collections.ConfigDict):
            continue
        unknown = sorted(path for path in _leaves(config[section], section + ".") if path not in known)
        if unknown:
            valid = sorted(key for key in known if key.startswith(section + "."))
            problems.append(f"unknown keys {unknown}; {section} has {valid}")
    return problems


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Refuse a run config with a missing, unknown or out-of-range value, naming each and its valid range.

    Configs that are not run configs (no ``workdir`` and none of the run sections, e.g. ``sweep``) pass as they
    are. The ``probe`` section is checked by building ``ProbeSettings`` from it.
    """
    if "workdir" not in config and not any(section in config for section in RUN_SECTIONS):
        return
    problems = _schema_problems(config)
    if not problems:
        for rule in RULES:
            value = _lookup(config, rule.key)
            if not rule.check(value):
                problems.append(f"{rule.key}={value!r}: expected {rule.valid}")
    if not problems:
        problems = _cross_key_problems(config)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    probe_settings(config)


def probe_settings(config: ml_collections.ConfigDict):
    """The ``probe`` section as ``ProbeSettings``; whatever it refuses becomes a ``ConfigError`` naming the section."""
    from jaxprobe.probes.run import settings_from_config  # lazy: pulls in jax

    try:
        return settings_from_config(config.probe)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid probe section: {error}") from error


# ---------------------------------------------------------------------------------------------------------------
# A work directory's own config, rebuilt from the resolved config its manifest.json holds.


def _overlay(base: ml_collections.ConfigDict, values: Mapping[str, Any], dropped: list[str], path: str = "") -> None:
    """Write ``values`` into ``base`` in place, keeping base's field types (JSON lists become tuples); keys the
    base does not have (renamed or removed since the values were recorded) are listed in ``dropped``."""
    for key, value in values.items():
        where = f"{path}{key}"
        if key not in base:
            dropped.append(where)
            continue
        if isinstance(value, Mapping) and isinstance(base[key], ml_collections.ConfigDict):
            _overlay(base[key], value, dropped, where + ".")
            continue
        if isinstance(value, list):
            value = tuple(value)
        try:
            base[key] = value
        except (TypeError, ValueError) as error:
            raise ConfigError(f"the recorded config's {where}={value!r} does not fit this jaxprobe's config "
                              f"({error}); rerun the stages with an explicit --config") from error


def config_from_dict(values: Mapping[str, Any], log=print) -> ml_collections.ConfigDict:
    """A validated ConfigDict from a resolved config dict (as ``manifest.json`` stores it), typed like the base.

    Recorded keys this jaxprobe no longer has (a manifest written by an older version) are left out, and ``log``
    says which.
    """
    config = load_config_file(find_config(BASE_CONFIG))
    dropped: list[str] = []
    _overlay(config, values, dropped)
    if dropped:
        log(f"note: the recorded config's keys {dropped} are unknown to this jaxprobe and were left out")
    validate_config(config)
    return config


def changed_keys(config: ml_collections.ConfigDict, recorded: Mapping[str, Any],
                 sections: tuple[str, ...]) -> list[str]:
    """Dotted keys of ``sections`` whose value in ``config`` differs from ``recorded`` (a resolved config dict)."""

    def flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        flat = {}
        for key, value in values.items():
            if isinstance(value, Mapping):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple | list) else value
        return flat

    ours = flatten({s: config[s].to_dict() for s in sections if s in config}, "")
    theirs = flatten({s: recorded[s] for s in sections if s in recorded}, "")
    return sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
