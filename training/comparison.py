"""Runs side by side, read back from MLflow: one table row per run, validation loss against
training time and against data (every run on one axes), and one self-contained HTML page
with the table, the plots and each run's final samples.

Everything is read from the runs themselves, so `charflow compare` on any runs prints the
same table that a sweep logs on its parent run as comparison.json.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_setup import (
    EXPERIMENT_PREFIX,
    INDEX_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    ui_compare_url,
    ui_run_url,
)
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
ARCH_KEYS = ("model", "num_layers", "hidden_size")  # what mlflow_setup.architecture names
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


# --- what a person reads --------------------------------------------------------------


def format_cell(column: str, value: Any) -> str:
    """One table cell as text: losses to 4 places, counts with thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("params", "chars", "chars_per_sec"):
        return f"{value:,.0f}"
    if column == "seconds":
        return f"{value:.1f}"
    if column == "sample_copy_rate":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4f}" if column in RESULT_COLUMNS else _plain(value)
    return str(value)


# Shorter headers where the terminal is narrow; comparison.json keeps the full names.
SHORT_HEADERS = {
    "best_val_loss": "val_loss",
    "chars_per_sec": "chars/s",
    "sample_copy_rate": "copy",
    "sample_bigram_loss": "bigram",
    "val_bigram_loss": "val_bigram",
}


def text_table(comparison: Comparison) -> str:
    """The table as aligned text (the reason of each failed run below it)."""
    columns = [c for c in comparison.columns if c not in ("reason", "run_id")]
    cells = [[format_cell(c, row.get(c)) for c in columns] for row in comparison.rows]
    headers = [SHORT_HEADERS.get(c, c) for c in columns]
    widths = [max(len(x) for x in column) for column in zip(headers, *cells, strict=True)]
    left = {"run", "status", *comparison.varied}

    def line(values: list[str]) -> str:
        padded = [
            v.ljust(w) if c in left else v.rjust(w)
            for c, v, w in zip(columns, values, widths, strict=True)
        ]
        return "  ".join(padded).rstrip()

    lines = [line(headers), *(line(row) for row in cells)]
    lines += [f"{row['run']} failed: {row['reason']}" for row in comparison.rows if row["reason"]]
    return "\n".join(lines)


def plot_png(comparison: Comparison, x: str) -> bytes:
    """Validation loss against `x` (seconds or chars) for every run on one axes, as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    for curve in comparison.curves:
        points = [(p[x], p["val_loss"]) for p in curve.points if p[x] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=".", label=curve.label)
    ax.set_xlabel(PLOTS[x])
    ax.set_ylabel("validation loss (nats/char)")
    ax.secondary_yaxis("right", functions=(bits, lambda b: b * math.log(2))).set_ylabel("bits/char")
    ax.set_title(f"validation loss vs {PLOTS[x]}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def final_samples(client, run) -> dict[str, str]:
    """{"T=0.5": text, ...} from samples/final_T<t>.txt; a run without them shows its last
    training sample instead; a failed run, nothing."""
    from mlflow.artifacts import load_text

    names = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    base = run.info.artifact_uri.rstrip("/")
    found = {
        f"T={t}": load_text(f"{base}/samples/final_T{t}.txt")
        for t in TEMPERATURES
        if f"samples/final_T{t}.txt" in names
    }
    steps = sorted(n for n in names if n.startswith("samples/step_"))
    if not found and steps:
        step = int(steps[-1].removeprefix("samples/step_").removesuffix(".txt"))
        found[f"last training sample (step {step})"] = load_text(f"{base}/{steps[-1]}")
    return found


def sample_html(text: str) -> str:
    """A sample, escaped, each document separator shown as a visible break."""
    mark = '<span class="docsep" title="document separator (U+001E)">␞ next document</span>'
    return html.escape(text).replace(DOC_SEPARATOR, mark)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr.failed td { color: #a00; }
.plots img { max-width: 49%; }
.wide { overflow-x: auto; }
table.samples td { vertical-align: top; text-align: left; min-width: 18rem; max-width: 30rem; }
.sample { white-space: pre-wrap; font: 12px/1.35 ui-monospace, monospace;
          background: #f7f7f7; padding: .5rem; border-radius: 4px; }
.docsep { display: block; border-top: 2px dashed #c60; color: #c60; font-size: 10px;
          margin: .3rem 0; }
"""


def render_report(
    comparison: Comparison,
    title: str,
    plots: dict[str, bytes],
    samples: list[dict[str, str]],
    parent_url: str | None = None,
) -> str:
    """One HTML page with nothing outside it: the table, the plots inlined as base64 PNG,
    and every run's final samples side by side (a column per run, a row per temperature)."""
    links = f'<a href="{html.escape(comparison.url)}">compare the runs in MLflow</a>'
    if parent_url:
        links += f' · <a href="{html.escape(parent_url)}">the sweep run</a>'
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        for name, png in plots.items()
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{len(comparison.rows)} runs, generated "
        f"{time.strftime('%Y-%m-%d %H:%M')} · {links}</p>\n"
        f"<h2>Results</h2>\n<div class=wide>{_html_table(comparison)}</div>\n"
        f"<h2>Validation loss</h2>\n<div class=plots>{images}</div>\n"
        f"<h2>Final samples</h2>\n<div class=wide>{_samples_table(comparison, samples)}</div>\n"
        "</body></html>\n"
    )


def _html_table(comparison: Comparison) -> str:
    columns = comparison.columns[:-1]  # run ids are in the compare link
    text = {"run", "status", "reason", *comparison.varied}
    cls = {c: ' class="text"' if c in text else "" for c in columns}
    head = "".join(f"<th{cls[c]}>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr{' class=failed' if row['status'] == 'FAILED' else ''}>"
        + "".join(f"<td{cls[c]}>{html.escape(format_cell(c, row.get(c)))}</td>" for c in columns)
        + "</tr>\n"
        for row in comparison.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _samples_table(comparison: Comparison, samples: list[dict[str, str]]) -> str:
    kinds = list(dict.fromkeys(kind for found in samples for kind in found))
    head = "".join(
        f"<th class=text>{html.escape(c.label)}<br><small>{html.escape(r['run'])}</small></th>"
        for c, r in zip(comparison.curves, comparison.rows, strict=True)
    )
    body = ""
    for kind in kinds:
        cells = "".join(
            f"<td><div class=sample>{sample_html(found[kind])}</div></td>"
            if kind in found
            else f"<td>{html.escape(row['reason'] or 'no sample')}</td>"
            for found, row in zip(samples, comparison.rows, strict=True)
        )
        body += f"<tr><th class=text>{html.escape(kind)}</th>{cells}</tr>\n"
    if not kinds:
        body = "<tr><td>no run logged a sample</td></tr>"
    return f"<table class=samples><thead><tr><th></th>{head}</tr></thead>\n{body}</table>"


def log_comparison(client, run_id: str, comparison: Comparison, title: str) -> None:
    """comparison.json (mlflow.log_table), plots/val_loss_vs_{seconds,chars}.png and
    report.html onto run `run_id` (a sweep's parent), with the best child's loss as metrics."""
    import pandas as pd

    table = pd.DataFrame(comparison.table())
    for column in ("params", "chars"):  # counts stay integers beside the missing ones
        table[column] = table[column].astype("Int64")
    client.log_table(run_id, table, "comparison.json")
    plots = {f"val_loss_vs_{x}": plot_png(comparison, x) for x in PLOTS}
    samples = [final_samples(client, run) for run in comparison.runs]
    parent = client.get_run(run_id)
    parent_url = ui_run_url(parent.info.experiment_id, run_id, client.tracking_uri)
    report = render_report(comparison, title, plots, samples, parent_url)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "plots").mkdir()
        for name, png in plots.items():
            (Path(tmp) / "plots" / f"{name}.png").write_bytes(png)
        (Path(tmp) / "report.html").write_text(report, encoding="utf-8")
        client.log_artifacts(run_id, tmp)
    _log_best(client, run_id, comparison)


def _log_best(client, run_id: str, comparison: Comparison) -> None:
    scored = [row for row in comparison.rows if row["best_val_loss"] is not None]
    if scored:
        best = min(scored, key=lambda row: row["best_val_loss"])
        client.log_metric(run_id, "best_val_loss", best["best_val_loss"])
        client.log_metric(run_id, "best_val_bpc", best["val_bpc"])
        client.set_tag(run_id, "charflow.best_run", best["run"])


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
