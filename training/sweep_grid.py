"""The grid of a sweep: which configurations of one corpus it trains. A built-in grid or
a YAML file expanded into settings, each checked and typed as a TrainConfig; the settings
they share and the ones that vary; the short label that tells the runs apart.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charflow.files import read_yaml
from training.comparison import ARCH_KEYS
from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_names import architecture

# The study charflow exists for: a vanilla RNN against a deeper one, a GRU and two LSTMs,
# all with the hidden size, budget and seed that the command line gives them.
ARCHITECTURES: list[dict[str, Any]] = [
    {"model": "rnn", "num_layers": 1},
    {"model": "rnn", "num_layers": 3},
    {"model": "gru", "num_layers": 2},
    {"model": "lstm", "num_layers": 1},
    {"model": "lstm", "num_layers": 2},
]
BUILTIN_GRIDS = {"architectures": ARCHITECTURES}
# With a budget in seconds or characters the step budget steps aside, so the budget asked
# for is the one that binds (a preset's max_steps would stop fast models first).
UNBOUNDED_STEPS = 10**9


def load_grid(spec: str | Path) -> list[dict[str, Any]]:
    """A built-in grid by name, or a YAML file holding either {setting: [values]} (every
    combination) or [{setting: value, ...}, ...] (these configurations)."""
    if str(spec) in BUILTIN_GRIDS:
        return [dict(entry) for entry in BUILTIN_GRIDS[str(spec)]]
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(BUILTIN_GRIDS)
        raise TrainingError(f"grid {str(spec)!r} is neither a built-in grid ({names}) nor a file")
    try:
        doc = read_yaml(path)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    return expand_grid(doc, str(path))


def expand_grid(doc: Any, where: str = "grid") -> list[dict[str, Any]]:
    """{setting: values} -> the cartesian product (a single value is a list of one);
    [{...}, ...] -> those configurations, in order."""
    if isinstance(doc, dict) and doc:
        axes = {str(k): v if isinstance(v, list) else [v] for k, v in doc.items()}
        empty = [key for key, values in axes.items() if not values]
        if empty:
            raise TrainingError(f"{where}: setting {empty[0]} has an empty list of values")
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    if isinstance(doc, list) and doc and all(isinstance(entry, dict) for entry in doc):
        return [{str(k): v for k, v in entry.items()} for entry in doc]
    raise TrainingError(
        f"{where}: a grid is a mapping of settings to lists of values, "
        "or a non-empty list of configurations (mappings)"
    )


def build_configs(
    base: TrainConfig, grid: Sequence[dict[str, Any]], fixed: dict[str, Any] | None = None
) -> list[TrainConfig]:
    """Every grid entry over `base`, typed by the field's annotation and validated; the
    first bad one fails with one line naming its key or value. `fixed`: the settings the
    user gave for every run (a grid may not also vary them)."""
    fixed = fixed or {}
    configs = []
    for number, entry in enumerate(grid, 1):
        try:
            configs.append(_entry_config(base, entry, fixed))
        except TrainingError as err:
            shown = ", ".join(f"{k}={v}" for k, v in entry.items())
            raise TrainingError(f"configuration {number} ({shown}): {err}") from None
    _refuse_duplicates(configs)
    return configs


def _entry_config(base: TrainConfig, entry: dict[str, Any], fixed: dict[str, Any]) -> TrainConfig:
    typed = TrainConfig.parse_overrides({key: _as_text(value) for key, value in entry.items()})
    both = sorted(set(typed) & set(fixed))
    if both:
        raise TrainingError(f"{both[0]} is set both by the grid and for every run; give it once")
    cfg = base.replace(**fixed, **typed)
    budgeted = cfg.max_seconds is not None or cfg.max_chars is not None
    if budgeted and "max_steps" not in typed and "max_steps" not in fixed:
        cfg = cfg.replace(max_steps=UNBOUNDED_STEPS)
    if budgeted and cfg.eval_chars is None and "eval_chars" not in {*typed, *fixed}:
        cfg = cfg.replace(eval_chars=SWEEP_EVAL_CHARS)  # 20+ evaluations must stay cheap
    return cfg.validate()


# What a budgeted sweep child evaluates on: the loss of 32k characters has a standard
# error of a few hundredths of a nat, well under the differences a sweep is run to see.
SWEEP_EVAL_CHARS = 32_768


def _as_text(value: Any) -> str:
    """A YAML value as the text `--set` would take (YAML reads `3e-3` as a string anyway)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _refuse_duplicates(configs: list[TrainConfig]) -> None:
    seen: dict[tuple, int] = {}
    for number, cfg in enumerate(configs, 1):
        key = tuple(cfg.to_params().items())
        if key in seen:
            raise TrainingError(f"configurations {seen[key]} and {number} are the same")
        seen[key] = number


def varied_settings(configs: Sequence[TrainConfig]) -> list[str]:
    """The settings whose values differ between configurations, in field order."""
    params = [cfg.to_params() for cfg in configs]
    return [key for key in params[0] if len({repr(p[key]) for p in params}) > 1]


def common_settings(configs: Sequence[TrainConfig]) -> dict[str, Any]:
    varied = set(varied_settings(configs))
    return {k: v for k, v in configs[0].to_params().items() if k not in varied}


def child_label(cfg: TrainConfig, varied: Sequence[str]) -> str:
    """`lstm2x256` plus each other varied setting: `lstm2x256-lr=0.003`."""
    params = cfg.to_params()
    extra = [f"{key}={_short(params[key])}" for key in varied if key not in ARCH_KEYS]
    return "-".join([architecture(cfg), *extra])


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    """A name that is safe as one folder name."""
    return re.sub(r"[^\w.=+-]+", "_", text).strip("._") or "run"
