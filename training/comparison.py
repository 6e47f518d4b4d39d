"""Runs side by side, read back from MLflow: one table row per run, validation loss against
training time and against data (every run on one axes), and one self-contained HTML page
with the table, the plots and each run's final samples (that page, the plots and the
text table: training/comparison_report.py).

Everything is read from the runs themselves, so `charflow compare` on any runs prints the
same table that a sweep logs on its parent run as comparison.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_names import EXPERIMENT_PREFIX, INDEX_TAG, PARENT_TAG, ROLE_TAG, SWEEP_TAG
from training.mlflow_setup import ui_compare_url
from training.units import bits

# After the run's name, its status and the settings that differ: these, in this order.
RESULT_COLUMNS = (
    "best_val_loss",
    "val_bpc",
    "test_loss",  # of the best checkpoint
    "params",
    "chars_per_sec",  # training steps only
    "seconds",
    "chars",
    "sample_copy_rate",
    "sample_bigram_loss",  # the samples' loss under the train split's bigram model ...
    "val_bigram_loss",  # ... beside real validation text's: far above it, the samples are soup
)
ARCH_KEYS = ("model", "num_layers", "hidden_size")  # what mlflow_names.architecture names
TEMPERATURES = ("0.5", "0.8", "1.0")  # samples/final_T<t>.txt of every finished run
SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig)) + ("corpus",)
PLOTS = {"seconds": "training seconds", "chars": "characters read"}
DOC_SEPARATOR = "\x1e"  # between documents in corpus.txt, so in samples too


@dataclass
class Curve:
    label: str
    points: list[dict[str, float]]  # {step, val_loss, seconds, chars}, by step


@dataclass
class Comparison:
    rows: list[dict[str, Any]]  # one per run, keyed by `columns`
    varied: list[str]  # the settings that differ between the runs
    curves: list[Curve]
    runs: list  # the mlflow Run of each row
    url: str  # the MLflow UI's compare-runs page of these runs

    @property
    def columns(self) -> list[str]:
        return ["run", "status", *self.varied, *RESULT_COLUMNS, "reason", "run_id"]

    def table(self) -> dict[str, list]:
        """Column -> values: what mlflow.log_table takes."""
        return {col: [row.get(col) for row in self.rows] for col in self.columns}


def compare_runs(client, runs: list) -> Comparison:
    """The comparison of `runs` (mlflow Run objects), in the order given."""
    if not runs:
        raise TrainingError("no runs to compare")
    settings = [_settings(run) for run in runs]
    varied = varied_keys(settings)
    rows, curves = [], []
    for run, setting in zip(runs, settings, strict=True):
        history = _histories(client, run.info.run_id)
        rows.append(_row(run, setting, history, varied))
        curves.append(Curve(_label(run, setting, varied), _points(history)))
    url = ui_compare_url(
        [r.info.experiment_id for r in runs], [r.info.run_id for r in runs], client.tracking_uri
    )
    return Comparison(rows, varied, curves, list(runs), url)


def varied_keys(settings: list[dict[str, Any]]) -> list[str]:
    """Settings with more than one value among the runs that have them (a run that failed
    before training logged fewer)."""
    return [k for k in SETTINGS if len({repr(s[k]) for s in settings if k in s}) > 1]


def _settings(run) -> dict[str, Any]:
    """The run's training settings, typed as TrainConfig types them (params are text)."""
    params = {k: v for k, v in run.data.params.items() if k in SETTINGS}
    typed: dict[str, Any] = {}
    for key, text in params.items():
        try:
            typed.update(TrainConfig.parse_overrides({key: text}))
        except (TrainingError, KeyError):  # corpus, or a value from an older version
            typed[key] = text
    return typed


def _histories(client, run_id: str) -> dict[str, dict[int, float]]:
    return {
        key: {m.step: m.value for m in client.get_metric_history(run_id, key)}
        for key in ("val_loss", "seconds", "chars")
    }


def _row(run, setting: dict, history: dict, varied: list[str]) -> dict[str, Any]:
    metrics = run.data.metrics
    losses = [v for v in history["val_loss"].values() if math.isfinite(v)]
    best = min(losses) if losses else None
    seconds, chars = _last(history["seconds"]), _last(history["chars"])
    params = run.data.params.get("param_count")
    return {
        "run": run.info.run_name,
        "status": run.info.status,
        **{key: setting.get(key) for key in varied},
        "best_val_loss": best,
        "val_bpc": bits(best) if best is not None else None,
        "test_loss": metrics.get("test_loss"),
        "params": int(params) if params and params.isdigit() else None,
        "chars_per_sec": chars / seconds if chars and seconds else metrics.get("chars_per_sec"),
        "seconds": seconds,
        "chars": int(chars) if chars is not None else None,
        "sample_copy_rate": metrics.get("sample_copy_rate"),
        "sample_bigram_loss": metrics.get("sample_bigram_loss"),
        "val_bigram_loss": metrics.get("val_bigram_loss"),
        "reason": run.data.tags.get("failure", ""),
        "run_id": run.info.run_id,
    }


def _last(by_step: dict[int, float]) -> float | None:
    return by_step[max(by_step)] if by_step else None


def _label(run, setting: dict, varied: list[str]) -> str:
    """What sets the run apart: `lstm2x256`, `lr=0.003`, `gru2x256 dropout=0.1`."""
    parts = []
    if any(key in varied for key in ARCH_KEYS):
        parts.append(
            f"{setting.get('model')}{setting.get('num_layers')}x{setting.get('hidden_size')}"
        )
    parts += [f"{key}={_plain(setting.get(key))}" for key in varied if key not in ARCH_KEYS]
    return " ".join(parts) or run.info.run_name


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _points(history: dict) -> list[dict[str, float]]:
    return [
        {"step": step, "val_loss": loss, **{k: history[k].get(step) for k in PLOTS}}
        for step, loss in sorted(history["val_loss"].items())
    ]


# --- which runs -----------------------------------------------------------------------


def find_runs(client, refs: list[str]) -> list:
    """Runs named by sweep names or run ids; a sweep (by name or by its parent's id)
    stands for its children, in grid order. The latest sweep wins where names repeat."""
    experiments = [
        e.experiment_id
        for e in client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")
    ]
    runs = []
    for ref in refs:
        parent = _sweep_parent(client, experiments, ref) or _run_by_id(client, ref)
        if parent.data.tags.get(ROLE_TAG) == "sweep":
            runs += sweep_children(client, parent)
        else:
            runs.append(parent)
    return runs


def _sweep_parent(client, experiments: list[str], name: str):
    if not experiments or "'" in name:
        return None
    found = client.search_runs(
        experiments,
        f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def _run_by_id(client, ref: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref)
    except MlflowException:
        raise TrainingError(
            f"{ref!r} is neither a sweep name nor a run id in {client.tracking_uri}"
        ) from None


def sweep_children(client, parent) -> list:
    found = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        max_results=10_000,
    )

    def order(run) -> tuple:
        index = run.data.tags.get(INDEX_TAG, "")
        return (int(index) if index.isdigit() else 1 << 30, run.info.start_time)

    return sorted(found, key=order)
