"""What a person reads of a comparison of runs (training/comparison.py): the text table
`charflow compare` prints, the loss plots, each run's final samples, and the self-contained
report.html that a sweep logs on its parent run with comparison.json.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from training.comparison import (
    DOC_SEPARATOR,
    PLOTS,
    RESULT_COLUMNS,
    TEMPERATURES,
    Comparison,
    _plain,
)
from training.mlflow_setup import ui_run_url
from training.units import bits


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
