"""The search space file: dotted config keys mapped to distributions, checked before Ray starts.

Why a YAML of dotted keys: the keys are the same ones `key=value` overrides and config files
use (docs/configuration.md), so any setting can be swept without code, and the best trial's
values drop straight into a config `jobs/erase.py --config` runs. Every bound and choice is
validated against its key's own range, so a space that would make trials fail is refused in
one line before any trial starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fade.config import FadeConfig, apply_overrides, config_to_dict
from fade.errors import ConfigError

#: Distribution name -> what its value must be.
KINDS = {
    "loguniform": "[low, high] with 0 < low < high",
    "uniform": "[low, high] with low < high",
    "randint": "[low, high] integers with low <= high (both included)",
    "choice": "a non-empty list of values",
}
#: What a sweep may vary: the method's settings. The base model's half of every evaluation is
#: measured once for the whole sweep, so the model, the concepts, the evaluation and the seed
#: stay those of the base config.
SWEPT_SECTION = "erase"


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted config key
    kind: str  # one of KINDS
    values: tuple  # (low, high) or the choices

    def domain(self):
        """The Ray Tune domain (OptunaSearch translates it into Optuna's distribution)."""
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "randint":
            return tune.randint(self.values[0], self.values[1] + 1)  # Tune's high is excluded
        return tune.choice(list(self.values))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        low, high = self.values
        return value is not None and low <= value <= high

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.values)}"
        return f"{self.kind} [{self.values[0]}, {self.values[1]}]"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    source: str
    text: str  # the file as written, recorded with the sweep

    def domains(self) -> dict:
        return {d.key: d.domain() for d in self.dimensions}

    def default_point(self, resolved: FadeConfig) -> dict[str, Any]:
        """The base config's value of every swept key (recipe values filled in), refused when
        it lies outside the space: Optuna would then score a point it cannot propose."""
        data = config_to_dict(resolved)
        point = {}
        for d in self.dimensions:
            section, _, leaf = d.key.rpartition(".")
            value = (data[section] if section else data)[leaf]
            if not d.contains(value):
                raise ConfigError(
                    f"the base config's {d.key}={value} lies outside the search space "
                    f"({d.describe()} in {self.source}): widen the space, change the base "
                    "config, or set tune.include_default=false"
                )
            point[d.key] = value
        return point


def _numbers(key: str, kind: str, value: Any, source: str) -> tuple:
    bad = ConfigError(f"{key} in {source}: {kind} takes {KINDS[kind]}, got {value!r}")
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise bad
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise bad
    low, high = value
    if not all(math.isfinite(v) for v in value):
        raise bad
    if kind == "randint":
        if not all(float(v).is_integer() for v in value) or low > high:
            raise bad
        return int(low), int(high)
    if low >= high or (kind == "loguniform" and low <= 0):
        raise bad
    return float(low), float(high)


def parse_space(data: Any, source: str, base: FadeConfig) -> tuple[Dimension, ...]:
    """Dimensions from the YAML mapping; each bound or choice is applied to `base` as an
    override, so the config's own validator says what is wrong with it."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"search space {source} must be a non-empty mapping of dotted config keys to "
            "distributions, e.g. erase.lam: {loguniform: [2, 200]}"
        )
    dimensions = []
    for key, spec in data.items():
        key = str(key)
        if key.split(".")[0] != SWEPT_SECTION:
            raise ConfigError(
                f"{key} in {source}: a sweep varies the erasure's settings (erase.*); the "
                "model, concepts, evaluation and seed are the base config's (set them on the "
                "command line), because every trial is compared with one measurement of the "
                "base model"
            )
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ConfigError(
                f"{key} in {source}: give exactly one distribution, one of "
                f"{', '.join(KINDS)}, e.g. {{uniform: [0.2, 1.0]}}"
            )
        ((kind, value),) = spec.items()
        if kind not in KINDS:
            raise ConfigError(
                f"{key} in {source}: unknown distribution {kind!r}; use one of {', '.join(KINDS)}"
            )
        if kind == "choice":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{key} in {source}: choice takes {KINDS['choice']}")
            values = tuple(value)
        else:
            values = _numbers(key, kind, value, source)
        for candidate in values:  # unknown keys and out-of-range values, in the config's words
            try:
                apply_overrides(base, {key: candidate})
            except ConfigError as error:
                raise ConfigError(f"search space {source}: {error}") from None
        dimensions.append(Dimension(key, kind, values))
    return tuple(dimensions)


def load_space(path: str | Path, base: FadeConfig) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in search space {path}: {error}") from None
    return SearchSpace(parse_space(data, str(path), base), str(path), text)
