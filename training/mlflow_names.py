"""What charflow calls things in MLflow: the metric names every run logs, experiment and
registered-model names per corpus, the tags of a sweep's runs, run names, and the tags a
user may add. Plain values and strings: importing this module imports neither mlflow nor
torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from training.errors import TrainingError

if TYPE_CHECKING:
    from training.config import TrainConfig

# Loss in nats/char; bpc (bits/char) = loss / ln 2. The same names in every run, so the
# MLflow UI can compare any two runs of a corpus side by side.
METRICS = (
    "train_loss",
    "train_bpc",
    "val_loss",
    "val_bpc",
    "test_loss",
    "test_bpc",
    "lr",
    "grad_norm",
    "chars_per_sec",
)
EXPERIMENT_PREFIX = "charflow/"
MODEL_PREFIX = "charflow-"
CHAMPION_ALIAS = "champion"
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
# A sweep: one parent run, a nested child run per configuration (training/sweep.py).
SWEEP_TAG = "charflow.sweep"  # the sweep's name, on the parent and on every child
ROLE_TAG = "charflow.role"  # "sweep" on the parent, "child" on the children
CHILD_TAG = "charflow.child"  # <parent run id>/<child folder>: finds a child in any state
INDEX_TAG = "charflow.child_index"  # the child's place in the grid
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child under its parent
# Tags charflow and MLflow set themselves; a user's --tag may not shadow them.
RESERVED_TAG_PREFIXES = ("mlflow.", "charflow.")


def architecture(cfg: TrainConfig) -> str:
    """`lstm2x256`: model type, layers x hidden size."""
    return f"{cfg.model}{cfg.num_layers}x{cfg.hidden_size}"


def default_run_name(corpus: str, cfg: TrainConfig) -> str:
    """`paulgraham-lstm2x256-0612-153012`: what was trained on what, and when (MLflow would
    otherwise pick random words)."""
    return f"{corpus}-{architecture(cfg)}-{time.strftime('%m%d-%H%M%S')}"


def user_tags(items: Iterable[str]) -> dict[str, str]:
    """["team=nlp", "goal=baseline"] -> tags; each key once, none in MLflow's or charflow's
    own namespaces (a user's `mlflow.parentRunId` would re-parent the run)."""
    from training.config import parse_assignments  # not at import: it loads torch

    tags = parse_assignments(items)
    for key in tags:
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise TrainingError(
                f"tag {key!r} is reserved (keys starting {' or '.join(RESERVED_TAG_PREFIXES)})"
            )
    return tags


def experiment_name(corpus: str) -> str:
    return EXPERIMENT_PREFIX + corpus


def registered_model_name(corpus: str) -> str:
    return MODEL_PREFIX + corpus
