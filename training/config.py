"""Every training hyperparameter in one place, with named presets.

Precedence, lowest first: dataclass defaults < preset < per-corpus defaults < explicit
overrides. All fields are logged as MLflow params under these exact names, so any two
runs can be compared side by side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    # schedule
    max_steps: int = 2000
    max_seconds: float | None = None
    eval_every: int = 200
    patience: int = 5  # evaluations without val improvement before stopping; 0 disables
    sample_chars: int = 300
    # runtime
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps" | "cuda:N"
    bf16: bool = True  # autocast to bfloat16 on CUDA only

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> TrainConfig:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, dict[str, Any]] = {
    # Fits 2 CPU cores: 2x256 LSTM, about 20k chars/s.
    "cpu-small": {},
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


def build_config(
    preset: str = "cpu-small",
    corpus_defaults: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = TrainConfig().replace(**PRESETS[preset])
    cfg = cfg.replace(**(corpus_defaults or {}))
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
