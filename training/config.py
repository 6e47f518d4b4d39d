"""Every training hyperparameter in one place, with named presets.

Precedence, lowest first: dataclass defaults < preset < per-corpus defaults < explicit
overrides. Every field can also be given as text (`charflow train --set key=value`);
`TrainConfig.parse_overrides` types it by the field's annotation. All fields are logged
as MLflow params under these exact names, so any two runs can be compared side by side.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from training.errors import TrainingError
from training.models import MODEL_TYPES


@dataclass
class TrainConfig:
    # model
    model: str = "lstm"
    emb_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    # data
    batch_size: int = 32
    seq_len: int = 128
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    # optimisation
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_decay: str = "cosine"  # "cosine" | "linear" | "constant"
    # Steps over which the rate decays (None: max_steps). With max_seconds or max_chars set,
    # the decay follows whichever runs out first, so a time- or data-boxed run still anneals.
    lr_decay_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    # schedule
    max_steps: int = 2000
    # Budgets besides max_steps: seconds of training steps (evaluation not counted, so a
    # model whose evaluation is slow gets the same training time) and characters read.
    # Either one also schedules evaluation: at least EVAL_POINTS of them however short.
    max_seconds: float | None = None
    max_chars: int | None = None
    eval_every: int = 200
    # Characters of the val split an evaluation reads (a fixed prefix, so every evaluation
    # of a run measures the same text); None: the whole split. Sweeps cap it: twenty
    # evaluations of a slow model over a whole split would cost more than its training.
    eval_chars: int | None = None
    patience: int = 5  # evaluations without val improvement before stopping; 0 disables
    sample_chars: int = 300
    # runtime
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps" | "cuda:N"
    bf16: bool = True  # autocast to bfloat16 on CUDA only

    def to_params(self) -> dict[str, Any]:
        """The fields, a float setting always as a float (60 and 60.0 would log as two
        different MLflow params of runs with the same budget)."""
        params = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            value = params[f.name]
            if "float" in str(f.type) and isinstance(value, int) and not isinstance(value, bool):
                params[f.name] = float(value)
        return params

    def replace(self, **overrides: Any) -> TrainConfig:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TrainingError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def parse_overrides(cls, raw: dict[str, str]) -> dict[str, Any]:
        """{"lr": "3e-3", "bf16": "off"} -> {"lr": 0.003, "bf16": False}, typed by each field.

        The types come from the annotations, so a new field is settable as text (e.g. by
        `charflow train --set`) without touching this method. Ranges are `validate`'s job.
        """
        hints = typing.get_type_hints(cls)
        return {key: _parse_value(key, text, hints[_known_field(key)]) for key, text in raw.items()}

    def validate(self) -> TrainConfig:
        """Reject settings the trainer cannot run, with one line naming the setting."""
        if self.model not in MODEL_TYPES:
            raise TrainingError(
                f"unknown model type {self.model!r}; choose one of {', '.join(MODEL_TYPES)}"
            )
        if self.lr_decay not in LR_DECAYS:
            raise TrainingError(
                f"unknown lr_decay {self.lr_decay!r}; choose one of {', '.join(LR_DECAYS)}"
            )
        positive = ("emb_size", "hidden_size", "num_layers", "batch_size", "seq_len")
        positive += ("max_steps", "eval_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, not {getattr(self, name)}")
        checks = {
            "dropout": 0 <= self.dropout < 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": self.grad_clip >= 0,
            "patience": self.patience >= 0,
            "sample_chars": self.sample_chars >= 0,
            "max_seconds": self.max_seconds is None or self.max_seconds > 0,
            "max_chars": self.max_chars is None or self.max_chars >= 1,
            "eval_chars": self.eval_chars is None or self.eval_chars >= 2,
            "lr_decay_steps": self.lr_decay_steps is None or self.lr_decay_steps >= 1,
        }
        # inf and nan pass a comparison or two above (nan fails them all, inf passes "> 0")
        # but no run can use them.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                checks[f.name] = False
        for name, ok in checks.items():
            if not ok:
                raise TrainingError(f"{name} = {getattr(self, name)} is out of range")
        return self


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """["lr=3e-3", "bf16=off"] -> {"lr": "3e-3", "bf16": "off"}; each key at most once."""
    raw: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise TrainingError(f"setting {item!r} is not of the form key=value")
        if key in raw:
            raise TrainingError(f"setting {key} is given twice ({raw[key]!r} and {value!r})")
        raw[key] = value
    return raw


def _known_field(key: str) -> str:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"choose from {', '.join(names)}"
    raise TrainingError(f"unknown training setting {key!r}; {hint}")


# Words accepted for a bool setting, so `--set bf16=off` reads as it would in a shell script.
BOOL_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "1"), True),
    **dict.fromkeys(("false", "no", "off", "0"), False),
}


def _parse_value(key: str, text: str, hint: Any) -> Any:
    """One setting's text as its field's type; `hint` is int, float, str, bool or X | None."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in options
    (kind,) = [t for t in options if t is not type(None)]  # fields are X or X | None only
    if optional and text.lower() == "none":
        return None
    expected = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, "text")
    expected += " or none" if optional else ""
    try:
        if kind is bool:
            return BOOL_WORDS[text.lower()]
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):  # nan slips past every range check in validate
                raise ValueError(text)
            return value
        if kind is str and text:
            return text
    except (KeyError, ValueError):
        pass
    raise TrainingError(f"bad value for training setting {key}: {text!r} (expected {expected})")


LR_DECAYS = ("cosine", "linear", "constant")
# Settings that may change when a run resumes (they steer the run, not the math).
RESUMABLE = (
    "max_steps",
    "max_seconds",
    "max_chars",
    "eval_every",
    "patience",
    "sample_chars",
    "device",
)


PRESETS: dict[str, dict[str, Any]] = {
    # Fits 2 CPU cores: 2x256 LSTM, about 15-20k chars/s. Tuned for 5-minute runs on
    # tiny-shakespeare: a high peak rate annealed to the end; no dropout (at ~4 epochs
    # dropout 0.1 cost more in speed of learning than it gave back in generalisation).
    "cpu-small": dict(lr=8e-3, warmup_steps=50, eval_every=250, max_steps=2000),
    # A few seconds on CPU; for tests and smoke runs.
    "tiny": dict(
        emb_size=16,
        hidden_size=32,
        num_layers=1,
        batch_size=8,
        seq_len=32,
        max_steps=60,
        eval_every=20,
        warmup_steps=5,
        sample_chars=80,
    ),
    # One modern GPU.
    "gpu": dict(
        emb_size=128,
        hidden_size=512,
        num_layers=3,
        dropout=0.2,
        batch_size=128,
        seq_len=256,
        lr=3e-3,
        max_steps=20000,
        eval_every=250,
        warmup_steps=200,
    ),
}


# The demo (`make demo`, `--preset demo`): a minute or two of CPU per corpus, trainings two
# at a time on one torch thread each. So short a budget favours cheap models: one layer. In
# equal time a 1x256 LSTM beats a 1x256 vanilla RNN on English and Go (it reads 60% of the
# characters but learns far more from each), while on Chinese text, where the output layer
# over thousands of characters costs most of a step whatever the recurrent cell, the RNN
# wins. Measured on validation, one torch thread, budgets in characters (docs/flows.md,
# "Measured"); benchmarks/bench_demo.py holds the targets and reruns them. max_seconds is
# the demo pipeline's share of its total budget; 60 s when the preset is used on its own.
PRESETS["demo"] = dict(
    model="lstm",
    num_layers=1,
    hidden_size=256,
    lr=8e-3,
    warmup_steps=10,  # 50 steps of warmup were a quarter of a Chinese run's budget
    max_steps=1_000_000,  # the time budget decides
    max_seconds=60.0,
    eval_every=1000,  # evaluations come from the time budget (20 of them)
)

# Settings per corpus on top of the demo preset (and above its corpus defaults).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "paulgraham": dict(seq_len=128),
    "friends": dict(seq_len=128),
    "kubernetes-go": dict(seq_len=128),
    "sanguo": dict(model="rnn"),
    "novel": dict(model="rnn"),
    "shuttleset": dict(hidden_size=128),  # 51k characters of 22 symbols
}
# A corpus not listed whose vocabulary is this large (Chinese: thousands of code points)
# gets the settings measured on 三国演义.
LARGE_VOCABULARY = 1000
DEMO_LARGE_VOCABULARY = DEMO_SETTINGS["sanguo"]
# How the demo splits its time budget: relative shares (default 1), where time buys most:
# 三国演义's characters cost ten times an English one's; the novel and the rallies have no
# target to reach.
DEMO_SHARES: dict[str, float] = {
    "sanguo": 2.0,
    "novel": 0.5,
    "shuttleset": 0.25,
}


def demo_settings(corpus: str, vocab_size: int | None = None) -> dict[str, Any]:
    """The demo's settings for a corpus: measured ones, else by vocabulary size."""
    if corpus in DEMO_SETTINGS:
        return dict(DEMO_SETTINGS[corpus])
    if vocab_size is not None and vocab_size >= LARGE_VOCABULARY:
        return dict(DEMO_LARGE_VOCABULARY)
    return {}


def demo_share(corpus: str) -> float:
    return DEMO_SHARES.get(corpus, 1.0)


# Defaults for corpora that have no module in scrapers/ (those carry their own
# `training_defaults`). tiny-shakespeare keeps its last 10% as val, like published results.
CORPUS_DEFAULTS: dict[str, dict[str, Any]] = {
    "tinyshakespeare": dict(val_fraction=0.1, test_fraction=0.0),
}


def build_config(
    preset: str = "cpu-small",
    corpus_defaults: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainConfig:
    if preset not in PRESETS:
        raise TrainingError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = TrainConfig().replace(**PRESETS[preset])
    cfg = cfg.replace(**(corpus_defaults or {}))
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
