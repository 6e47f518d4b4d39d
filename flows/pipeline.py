"""The `pipeline` flow: ingest then train, for a list of corpora (the `pipeline/demo` job).

Every corpus is ingested at once, one task each, on the flow's task runner: threads here;
CHARFLOW_TASK_RUNNER=dask or ray spreads the ingests over a cluster (configuration, not
code; see docs/flows.md). Each corpus's training starts as soon as its ingest is done and
a training slot is free: `parallel` trainings at a time, each in a process of its own on
`torch_threads` torch threads, the largest share of the budget first. A total time budget
(`budget_seconds`) is split between the corpora by their demo shares.

One corpus failing does not stop the others; the flow logs why (so `prefect deployment run
--watch` shows it), ends on a summary table with one MLflow link comparing its runs, and
fails at the end, naming every corpus that failed and why.
"""

from __future__ import annotations

import os
import queue
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.ingest_flow import ingest_flow
from flows.train_flow import train_flow
from scrapers.errors import IngestError
from scrapers.registry import get_corpus, list_corpora
from training.config import demo_share

SUMMARY_ARTIFACT = "pipeline-summary"


def task_runner_from_env():
    """CHARFLOW_TASK_RUNNER: threads (default) | dask | ray; DASK_ADDRESS / RAY_ADDRESS
    name a running cluster (unset: a local one)."""
    kind = os.environ.get("CHARFLOW_TASK_RUNNER", "threads")
    if kind == "threads":
        # Every ingest at once plus the trainings: the threads mostly wait (on the network,
        # on a training process), so they are cheap.
        return ThreadPoolTaskRunner(max_workers=16)
    try:
        if kind == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(address=os.environ.get("DASK_ADDRESS"))
        if kind == "ray":
            from prefect_ray import RayTaskRunner

            return RayTaskRunner(address=os.environ.get("RAY_ADDRESS"))
    except ImportError:
        raise ImportError(
            f"CHARFLOW_TASK_RUNNER={kind} needs the prefect-{kind} package: "
            f"pip install prefect-{kind}"
        ) from None
    raise ValueError(f"CHARFLOW_TASK_RUNNER={kind!r}: choose threads, dask or ray")


def corpus_source(corpus: str, mirror: str | None, sources: dict[str, str]) -> str | None:
    """Where to read `corpus`: an explicit source, else its path inside the mirror, else the
    corpus's own default (None)."""
    if corpus in sources:
        return sources[corpus]
    if mirror is None:
        return None
    spec = get_corpus(corpus)
    if spec.mirror_path is None:
        raise IngestError(
            f"corpus {corpus} has no mirror_path; give its source in sources={{{corpus!r}: ...}}"
        )
    return mirror.rstrip("/") + "/" + spec.mirror_path.lstrip("/")


def split_budget(corpora: list[str], budget_seconds: float, parallel: int) -> dict[str, float]:
    """Training seconds per corpus: `parallel` slots for `budget_seconds` each, shared out by
    demo share (training/config.py), so the trainings take about `budget_seconds` in all."""
    shares = {corpus: demo_share(corpus) for corpus in corpora}
    total = sum(shares.values()) or 1.0
    return {
        corpus: round(budget_seconds * parallel * share / total, 1)
        for corpus, share in shares.items()
    }


@task(name="ingest-corpus", task_run_name="ingest {corpus}")
def ingest_corpus(
    corpus: str, source: str | None, limit: int | None, data_dir: str | None, retries: int = 2
):
    """One corpus's `ingest` flow, as a task so the task runner can run many at once."""
    return ingest_flow(corpus, source=source, limit=limit, data_dir=data_dir, retries=retries)


@task(name="train-corpus", task_run_name="train {corpus}")
def train_corpus(
    corpus: str,
    preset: str,
    overrides: dict[str, Any],
    force: bool,
    data_dir: str | None,
    torch_threads: int | None,
):
    """One corpus's `train` flow, as a task so trainings can run side by side."""
    return train_flow(
        corpus, preset=preset, overrides=overrides, force=force, data_dir=data_dir,
        torch_threads=torch_threads,
    )  # fmt: skip


@flow(name="pipeline", flow_run_name="pipeline-{preset}", task_runner=task_runner_from_env())
def pipeline_flow(
    corpora: list[str] | None = None,
    limit: int | None = None,
    preset: str = "demo",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    mirror: str | None = None,
    sources: dict[str, str] | None = None,
    data_dir: str | None = None,
    budget_seconds: float | None = None,
    parallel: int = 1,
    torch_threads: int | None = None,
    retries: int = 2,
) -> dict[str, Any]:
    """Ingest every corpus, then train on each; log a summary table and an MLflow link.

    corpora: corpus names (default: every registered corpus).
    limit: at most this many documents per corpus (default: all of them).
    preset, overrides: training settings (see the `train` flow); the demo preset adds each
        corpus's measured demo settings.
    force: train even when a corpus is unchanged since its champion was trained.
    mirror: base URL of an offline mirror laid out like ../shared/corpora; each corpus
        reads <mirror>/<its mirror_path>.
    sources: per-corpus source overrides, e.g. {"kubernetes-go": "/path/to/go/tree"}.
    budget_seconds: training time of the whole run (wall clock, training steps; evaluation
        and start-up come on top), split between the corpora by their demo shares.
        None: each training keeps its preset's own budget (or overrides' max_seconds).
    parallel: how many trainings run at once.
    torch_threads: torch threads per training, each in a process of its own (None: in
        this process).
    retries: how often a failed fetch is retried (see the `ingest` flow).
    """
    logger = get_run_logger()
    corpora = corpora or [spec.name for spec in list_corpora()]
    for corpus in corpora:
        get_corpus(corpus)  # unknown names fail here, before anything runs
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    overrides = dict(overrides or {})
    seconds = {}
    if budget_seconds and "max_seconds" not in overrides:
        seconds = split_budget(corpora, budget_seconds, parallel)
        logger.info(
            "training budget %g s, %d at a time%s: %s",
            budget_seconds,
            parallel,
            f" on {torch_threads} torch thread(s) each" if torch_threads else "",
            ", ".join(f"{c} {s:g} s" for c, s in seconds.items()),
        )
    failures: dict[str, str] = {}
    results: dict[str, Any] = {}

    def failed(corpus: str, why: str) -> None:
        failures[corpus] = why
        logger.error("%s: %s", corpus, why)

    # Futures report here when they finish: (kind, corpus).
    done: queue.Queue[tuple[str, str]] = queue.Queue()

    def on_done(future, kind: str, corpus: str) -> None:
        future.add_done_callback(lambda _: done.put((kind, corpus)))

    ingests, trainings = {}, {}
    for corpus in corpora:
        try:
            source = corpus_source(corpus, mirror, sources or {})
        except IngestError as err:
            failed(corpus, str(err))
            continue
        ingests[corpus] = ingest_corpus.submit(corpus, source, limit, data_dir, retries)
        on_done(ingests[corpus], "ingest", corpus)

    ready: list[str] = []  # ingested, waiting for a training slot
    outstanding = len(ingests)
    while outstanding:
        kind, corpus = done.get()
        outstanding -= 1
        if kind == "ingest":
            future = ingests[corpus]
            future.wait()
            if not future.state.is_completed():  # failed or crashed
                failed(corpus, f"ingest failed: {future.state.message}")
            else:
                results[corpus] = {"ingest": future.result()}
                ready.append(corpus)
        else:
            future = trainings.pop(corpus)
            future.wait()
            if not future.state.is_completed():
                failed(corpus, f"train failed: {future.state.message}")
            else:
                trained = future.result()
                results[corpus]["train"] = trained
                if not trained.get("trained"):
                    logger.info("%s: not trained: %s", corpus, trained["reason"])
        ready.sort(key=lambda c: -demo_share(c))  # the longest training first
        while ready and len(trainings) < parallel:
            corpus = ready.pop(0)
            settings = {**overrides, **({"max_seconds": seconds[corpus]} if seconds else {})}
            trainings[corpus] = train_corpus.submit(
                corpus, preset, settings, force, data_dir, torch_threads
            )
            on_done(trainings[corpus], "train", corpus)
            outstanding += 1

    summary = summarize(corpora, results, failures)
    logger.info("%s", summary)
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT,
        markdown=f"```text\n{summary}\n```\n",
        description=f"pipeline-{preset}: {len(results) - len(failures)} of {len(corpora)} corpora",
    )
    if failures:
        summary = "; ".join(f"{name}: {why}" for name, why in failures.items())
        raise RuntimeError(f"{len(failures)} of {len(corpora)} corpora failed: {summary}")
    return results


# -- the summary ---------------------------------------------------------------------------


def summarize(corpora: list[str], results: dict[str, Any], failures: dict[str, str]) -> str:
    """Per corpus: val loss and bits/char, the champion, a sample; then one MLflow link that
    opens the comparison of these runs (or says how to start the UI)."""
    from training.mlflow_setup import ui_compare_url

    trained = {
        c: results[c]["train"]
        for c in corpora
        if results.get(c, {}).get("train", {}).get("trained")
    }
    lines = [summary_table(corpora, results, failures), ""]
    for corpus, row in trained.items():
        if row.get("sample"):
            lines.append(f"{corpus} writes (temperature 0.8):")
            lines += ["    " + line for line in row["sample"].splitlines()]
    runs = [(row["experiment_id"], row["run_id"]) for row in trained.values() if row.get("run_id")]
    if runs:
        url = ui_compare_url([e for e, _ in runs], [r for _, r in runs])
        lines += ["", f"Compare these {len(runs)} runs in MLflow: {url}"]
        if problem := mlflow_ui_problem():
            lines.append(f"  ({problem})")
    return "\n".join(lines)


def summary_table(corpora: list[str], results: dict[str, Any], failures: dict[str, str]) -> str:
    header = ("corpus", "model", "seconds", "steps", "val loss", "bits/char", "champion")
    rows = []
    for corpus in corpora:
        row = results.get(corpus, {}).get("train")
        if corpus in failures:
            rows.append((corpus, f"FAILED: {failures[corpus]}"))
        elif row is None:
            rows.append((corpus, "not run"))
        elif not row.get("trained"):
            champion = row.get("champion_version")
            rows.append((corpus, f"not trained ({row['reason']})" + (
                f"; champion v{champion}" if champion else "")))  # fmt: skip
        else:
            mark = " (this run)" if row["is_champion"] else f" (this run: v{row['model_version']})"
            rows.append((
                corpus, row["model"], f"{row['max_seconds']:g}" if row["max_seconds"] else "-",
                str(row["steps"]), f"{row['val_loss']:.3f}", f"{row['val_bpc']:.3f}",
                f"v{row['champion_version']}{mark}",
            ))  # fmt: skip
    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(h)] + [len(r[i]) for r in full]) for i, h in enumerate(header)]
    right = {2, 3, 4, 5}

    def line(cells) -> str:
        if len(cells) != len(header):  # a corpus without figures: its name and why
            return f"{cells[0].ljust(widths[0])}  {cells[1]}"
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def mlflow_ui_problem(timeout: float = 2.0) -> str | None:
    """None when the MLflow UI that links point at answers; else what to do about it."""
    import requests

    from training.mlflow_setup import ui_base_url

    base = ui_base_url()
    try:
        if requests.get(f"{base}/health", timeout=timeout).ok:
            return None
    except requests.RequestException:
        pass
    return (
        f"no MLflow UI answers at {base}: start one with `make mlflow-ui` "
        "or `charflow services up`, then open the link"
    )
