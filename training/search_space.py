"""An Optuna search space: a YAML mapping of TrainConfig settings to ranges or choices,
parsed, typed by the setting it ranges over, and checked before anything starts.


    lr: {low: 1e-3, high: 1e-2, log: true}     # a float setting: a float range
    dropout: {low: 0.0, high: 0.3}
    num_layers: {low: 1, high: 3}               # an int setting: an int range (step: 1)
    model: [gru, lstm]                          # any setting: these choices
    optuna:                                     # optional, these are the defaults
      sampler: {n_startup_trials: 4}            # TPE: random trials before it models
      pruner: {n_startup_trials: 2, n_warmup_steps: 4}

The pruner compares trials at the same point of their budget: a run bounded by time or
characters evaluates at each twentieth of it (training/loop.py), so the "step" a trial
reports is the twentieth it has reached (1..20), not its training step, which differs
between fast and slow configurations. n_warmup_steps counts twentieths too.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charflow.files import read_yaml
from training.config import TrainConfig
from training.errors import TrainingError

OPTUNA_DEFAULTS = {
    "sampler": {"n_startup_trials": 4, "seed": None},  # seed None: the runs' own seed
    "pruner": {"n_startup_trials": 2, "n_warmup_steps": 4},
}
RANGE_KEYS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Range:
    """One searched setting: low..high (int or float, by the setting's type), or choices."""

    key: str
    kind: str  # "int" | "float" | "choice"
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        extra = " log" if self.log else f" step {self.step:g}" if self.step else ""
        return f"{self.key} in [{self.low:g}, {self.high:g}]{extra}"

    def doc(self) -> Any:
        """As it would be written in the YAML file (normalised: typed, defaults filled)."""
        if self.kind == "choice":
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class SearchSpace:
    ranges: tuple[Range, ...]
    optuna: dict = field(default_factory=lambda: json.loads(json.dumps(OPTUNA_DEFAULTS)))

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.ranges]

    def suggest(self, trial) -> dict[str, Any]:
        return {r.key: r.suggest(trial) for r in self.ranges}

    def describe(self) -> str:
        return ", ".join(r.describe() for r in self.ranges)

    def doc(self) -> dict[str, Any]:
        """The whole space as plain JSON values: it travels to flow runs and is kept with
        the study, so a search continued with another space is refused."""
        return {**{r.key: r.doc() for r in self.ranges}, "optuna": self.optuna}


def load_space(
    spec: str | Path, base: TrainConfig, fixed: typing.Iterable[str] = ()
) -> SearchSpace:
    """The search space of a YAML file, checked against the runs' settings (`base`) and
    the settings given for every run (`fixed`): one line naming the bad key or value."""
    path = Path(spec)
    if not path.is_file():
        raise TrainingError(f"search space {str(spec)!r} is not a file (a YAML file of ranges)")
    try:
        doc = read_yaml(path)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    try:
        return check_space(parse_space(doc), base, fixed)
    except TrainingError as err:
        raise TrainingError(f"{path}: {err}") from None


def parse_space(doc: Any) -> SearchSpace:
    """{setting: {low, high[, log, step]} | [choices], optuna: {...}} -> SearchSpace."""
    if not isinstance(doc, dict) or not [k for k in doc if k != "optuna"]:
        raise TrainingError(
            "a search space maps settings to ranges ({low: ..., high: ...}) or to lists of choices"
        )
    ranges = tuple(_parse_range(str(key), value) for key, value in doc.items() if key != "optuna")
    return SearchSpace(ranges, _parse_optuna(doc.get("optuna")))


def _parse_range(key: str, value: Any) -> Range:
    hints = typing.get_type_hints(TrainConfig)
    if key not in hints:
        TrainConfig.parse_overrides({key: ""})  # raises: unknown setting, with a suggestion
    if isinstance(value, list):
        return _parse_choices(key, value)
    if not isinstance(value, dict):
        raise TrainingError(
            f"{key}: a search range is {{low: ..., high: ...}} or a list of choices, "
            f"not {value!r} (a setting for every run goes in --set)"
        )
    unknown = sorted(set(map(str, value)) - set(RANGE_KEYS))
    if unknown:
        raise TrainingError(
            f"{key}: unknown range key {unknown[0]!r} (use {', '.join(RANGE_KEYS)})"
        )
    missing = [k for k in ("low", "high") if k not in value]
    if missing:
        raise TrainingError(f"{key}: a range needs {missing[0]}")
    kind = _number_kind(key, hints[key])
    low, high = (_typed(key, value[k], k) for k in ("low", "high"))
    if kind == "int" and not all(isinstance(v, int) for v in (low, high)):
        raise TrainingError(f"{key}: an integer setting takes integer low and high")
    low, high = (float(v) if kind == "float" else v for v in (low, high))
    if not low < high:
        raise TrainingError(f"{key}: low ({low:g}) must be below high ({high:g})")
    log_scale = value.get("log", False)
    if not isinstance(log_scale, bool):
        raise TrainingError(f"{key}: log is true or false, not {log_scale!r}")
    if log_scale and low <= 0:
        raise TrainingError(f"{key}: a log range needs low > 0, not {low:g}")
    step = value.get("step")
    if step is not None:
        step = _typed(key, step, "step")
        if log_scale:
            raise TrainingError(f"{key}: give log or step, not both")
        if kind == "int" and not isinstance(step, int):
            raise TrainingError(f"{key}: an integer setting takes an integer step")
        if not step > 0:
            raise TrainingError(f"{key}: step must be above 0, not {step:g}")
        step = float(step) if kind == "float" else step
    return Range(key, kind, low, high, log_scale, step)


def _number_kind(key: str, hint: Any) -> str:
    options = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    if options == [int]:
        return "int"
    if options == [float]:
        return "float"
    raise TrainingError(f"{key} is not a number: give a list of choices, not a range")


def _typed(key: str, value: Any, what: str) -> Any:
    """A range bound as a number: an int as YAML reads it, else a float (YAML reads 1e-3
    as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value) if isinstance(value, float | str) else None
    except ValueError:
        number = None
    if number is None or not abs(number) < float("inf"):
        raise TrainingError(f"{key}: {what} must be a finite number, not {value!r}")
    return number


def _parse_choices(key: str, values: list) -> Range:
    from training.sweep_grid import _as_text

    if not values:
        raise TrainingError(f"{key}: the list of choices is empty")
    choices = []
    for value in values:
        if isinstance(value, dict | list):
            raise TrainingError(f"{key}: a choice is one value, not {value!r}")
        typed = TrainConfig.parse_overrides({key: _as_text(value)})[key]
        if typed in choices:
            raise TrainingError(f"{key}: choice {value!r} is listed twice")
        choices.append(typed)
    return Range(key, "choice", choices=tuple(choices))


def _parse_optuna(doc: Any) -> dict:
    settings = json.loads(json.dumps(OPTUNA_DEFAULTS))
    if doc is None:
        return settings
    if not isinstance(doc, dict):
        raise TrainingError("optuna: a mapping with sampler and pruner settings")
    for part, values in doc.items():
        if part not in settings:
            raise TrainingError(f"optuna: unknown key {part!r} (use sampler, pruner)")
        if not isinstance(values, dict):
            raise TrainingError(f"optuna.{part}: a mapping of settings")
        for key, value in values.items():
            if key not in settings[part]:
                known = ", ".join(settings[part])
                raise TrainingError(f"optuna.{part}: unknown setting {key!r} (use {known})")
            if key == "seed" and (value is None or _whole(value)):  # None: the runs' seed
                settings[part][key] = value
                continue
            if not _whole(value) or value < 0:
                raise TrainingError(f"optuna.{part}.{key}: a whole number >= 0, not {value!r}")
            settings[part][key] = value
    return settings


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def space_from_doc(doc: dict[str, Any]) -> SearchSpace:
    """SearchSpace.doc() back into a SearchSpace (in a flow run or a worker process)."""
    return parse_space(doc)


def check_space(
    space: SearchSpace, base: TrainConfig, fixed: typing.Iterable[str] = ()
) -> SearchSpace:
    """Every bound and choice must make a configuration the trainer accepts, and a
    searched setting may not also be given for every run."""
    fixed = set(fixed)
    for r in space.ranges:
        if r.key in fixed:
            raise TrainingError(f"{r.key} is searched and also set for every run; give it once")
        values = r.choices if r.kind == "choice" else (r.low, r.high)
        for value in values:
            try:
                base.replace(**{r.key: value}).validate()
            except TrainingError as err:
                raise TrainingError(f"{r.key}: {value!r}: {err}") from None
    return space
