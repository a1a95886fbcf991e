"""``ProbeSettings``: the config's ``probe`` section as a validated dataclass.

Defaults mirror ``configs/demo.py`` (the base config; a test keeps them equal). Every value is checked when the
settings are made, so an out-of-range config fails before any features are read, with the valid range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxprobe.errors import ConfigError

KNOWN_KINDS = ("ridge", "logistic", "mlp")
FOLD_SCALINGS = ("train", "fold")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """What to fit, how to select it and which controls to run (see the README's "Probes" section)."""

    kinds: tuple[str, ...] = ("ridge", "logistic")
    ridge_lambdas: tuple[float, ...] = tuple(10.0**k for k in range(4, -3, -1))
    logistic_lambdas: tuple[float, ...] = tuple(10.0**k for k in range(0, -6, -1))
    folds: int = 5
    grouped_folds: bool = True
    fold_scaling: str = "train"  # standardise with all training rows ("train") or each fold's own rows ("fold")
    seed: int = 0
    control_task: bool = True
    permutations: int = 999
    bootstrap: int = 1000
    ci_level: float = 0.95
    max_iter: int = 100
    tol: float = 1e-4
    sites: tuple[str, ...] = ("*",)
    memory_gb: float = 4.0
    baseline_features: str | None = None
    mlp_seeds: tuple[int, ...] = (0,)
    mlp_hidden: int = 256
    mlp_epochs: int = 20

    def __post_init__(self) -> None:
        for name in ("kinds", "ridge_lambdas", "logistic_lambdas", "sites", "mlp_seeds"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, tuple | list):
                raise ConfigError(f"probe.{name} must be a tuple, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        _check_kinds(self.kinds)
        for name in ("ridge_lambdas", "logistic_lambdas"):
            _check_lambdas(name, getattr(self, name))
        _check_range("folds", self.folds, "an integer >= 2", _is_int(self.folds) and self.folds >= 2)
        _check_choice("fold_scaling", self.fold_scaling, FOLD_SCALINGS)
        for name in ("permutations", "bootstrap"):
            value = getattr(self, name)
            _check_range(name, value, "an integer >= 0", _is_int(value) and value >= 0)
        _check_range("ci_level", self.ci_level, "a number in (0, 1)", _is_number(self.ci_level)
                     and 0 < self.ci_level < 1)
        _check_range("max_iter", self.max_iter, "an integer >= 1", _is_int(self.max_iter) and self.max_iter >= 1)
        _check_range("tol", self.tol, "a number in (0, 1)", _is_number(self.tol) and 0 < self.tol < 1)
        _check_range("memory_gb", self.memory_gb, "a number > 0", _is_number(self.memory_gb) and self.memory_gb > 0)
        if not self.sites or not all(isinstance(glob, str) and glob for glob in self.sites):
            raise ConfigError(f"probe.sites must be one or more site-name globs, e.g. ('llm.*',), got {self.sites}")
        if not self.mlp_seeds or not all(_is_int(seed) for seed in self.mlp_seeds):
            raise ConfigError(f"probe.mlp_seeds must be one or more integers, got {self.mlp_seeds}")
        for name in ("mlp_hidden", "mlp_epochs"):
            value = getattr(self, name)
            _check_range(name, value, "an integer >= 1", _is_int(value) and value >= 1)

    @property
    def linear_kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in self.kinds if kind != "mlp")

    def lambdas(self, kind: str) -> np.ndarray:
        """The grid, largest first (the order of rows in ``probes.parquet``)."""
        grid = self.ridge_lambdas if kind == "ridge" else self.logistic_lambdas
        return np.sort(np.asarray(grid, np.float32))[::-1]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: Any, expected: str, valid: bool) -> None:
    if not valid:
        raise ConfigError(f"probe.{name} must be {expected}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"probe.{name} must be one of {list(choices)}, got {value!r}")


def _check_kinds(kinds: tuple[str, ...]) -> None:
    unknown = [kind for kind in kinds if kind not in KNOWN_KINDS]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise ConfigError(f"probe.kinds must be distinct kinds out of {list(KNOWN_KINDS)} (at least one), "
                          f"got {kinds}")


def _check_lambdas(name: str, grid: tuple[float, ...]) -> None:
    if not grid or not all(_is_number(lam) and lam > 0 for lam in grid) or len(set(grid)) != len(grid):
        raise ConfigError(f"probe.{name} must be one or more distinct numbers > 0, got {grid}")


def settings_from_config(section: Mapping[str, Any]) -> ProbeSettings:
    """The config's ``probe`` section (a ConfigDict or a dict) as validated ``ProbeSettings``."""
    values = dict(section.items())
    known = {field.name for field in dataclasses.fields(ProbeSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown probe settings {unknown}; valid keys: {sorted(known)}")
    return ProbeSettings(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})
