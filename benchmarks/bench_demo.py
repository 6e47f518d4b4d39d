"""The demo's quality targets (issue 16): best val loss of each corpus's demo settings in the
share of the demo's default budget that `make demo` gives it, trained as the demo trains:
two at a time, each in a process of its own on one torch thread.

    corpus          target (nats/char)
    paulgraham      <= 1.55
    friends         <= 1.45
    sanguo          <= 5.0
    kubernetes-go   <= 1.55     (the Debian Go tree of k8s.io/utils, as make demo reads)

The whole corpora are read from ../shared/corpora into a temporary CHARFLOW_HOME (no
Prefect, no MLflow: the figures are the trainer's), with the same settings and seconds the
flow uses (flows/train_flow.training_config, flows/pipeline.split_budget). The figures
depend on how much CPU the machine really gives: run it on a quiet machine; the note shows
the characters per second seen.

    python -m benchmarks demo                    # make bench runs it too
    python -m benchmarks.bench_demo --budget 240 --corpora sanguo paulgraham
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIRROR = REPO.parent / "shared" / "corpora"
GO_TREE = Path(os.environ.get("GO_TREE") or "/usr/share/gocode/src/k8s.io/utils")
TARGETS = {"paulgraham": 1.55, "friends": 1.45, "sanguo": 5.0, "kubernetes-go": 1.55}


def source_of(corpus: str) -> str:
    from scrapers.registry import get_corpus

    if corpus == "kubernetes-go":
        return str(GO_TREE)
    return str(MIRROR / get_corpus(corpus).mirror_path)


def demo_plan(budget: float | None = None) -> tuple[dict[str, float], int, int]:
    """(seconds per corpus, trainings at a time, torch threads each) as the demo deployment
    runs it: its budget split over every registered corpus."""
    from flows.deployments import DEMO_PARAMETERS
    from flows.pipeline import split_budget
    from scrapers.registry import list_corpora

    budget = budget or DEMO_PARAMETERS["budget_seconds"]
    parallel = DEMO_PARAMETERS["parallel"]
    seconds = split_budget([s.name for s in list_corpora()], budget, parallel)
    return seconds, parallel, DEMO_PARAMETERS["torch_threads"]


def train_one(corpus: str, corpus_dir: str, seconds: float) -> dict:
    """One demo training, in a worker process (the flow's settings, tracking off)."""
    import json

    from flows.train_flow import training_config
    from training.train import train

    manifest = json.loads((Path(corpus_dir) / "manifest.json").read_text())
    cfg = training_config(corpus, "demo", {"max_seconds": seconds}, manifest["vocab_size"])
    started = time.perf_counter()
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, corpus_dir, corpus=corpus, out_dir=Path(out), track=False)
    best = min(result.history, key=lambda r: r["val_loss"])
    return {
        "corpus": corpus,
        "config": f"{cfg.model}{cfg.num_layers}x{cfg.hidden_size} seq {cfg.seq_len} "
        f"batch {cfg.batch_size} lr {cfg.lr:g}",
        "best_val_loss": result.best_val_loss,
        "best_step": best["step"],
        "steps": result.steps,
        "chars": result.history[-1]["chars"],
        "chars_per_sec": result.chars_per_sec,
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
    }


def run(budget: float | None = None, corpora: list[str] | None = None) -> list[dict]:
    from scrapers.ingest import ingest
    from training.units import bits

    corpora = corpora or list(TARGETS)
    seconds, parallel, threads = demo_plan(budget)
    rows = []
    with tempfile.TemporaryDirectory() as home:
        # Corpora and the trainer's encoded cache in the temporary home, not the checkout's.
        saved = os.environ.get("CHARFLOW_HOME")
        os.environ["CHARFLOW_HOME"] = home
        data = Path(home) / "data"
        for corpus in corpora:
            ingest(corpus, source_of(corpus), data_dir=data, progress=False)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            parallel, mp_context=context, initializer=_threads, initargs=(threads,)
        ) as pool:
            # The longest first, as the demo starts them.
            order = sorted(corpora, key=lambda c: -seconds[c])
            jobs = [pool.submit(train_one, c, str(data / c), seconds[c]) for c in order]
            results = {job.result()["corpus"]: job.result() for job in jobs}
        if saved is None:
            os.environ.pop("CHARFLOW_HOME")
        else:
            os.environ["CHARFLOW_HOME"] = saved
    for corpus in corpora:
        r = results[corpus]
        target = TARGETS.get(corpus)
        rows.append(
            {
                "name": f"demo on {corpus}: best val loss in {seconds[corpus]:g} s",
                "value": r["best_val_loss"],
                "unit": "nats/char",
                "target": f"<= {target}" if target else None,
                "note": (
                    f"{bits(r['best_val_loss']):.3f} bits/char; {r['config']}; best at step "
                    f"{r['best_step']} of {r['steps']}, {r['chars']:,} chars read, "
                    f"{r['chars_per_sec']:,.0f} chars/s while training, {r['wall']:.0f} s wall / "
                    f"{r['cpu']:.0f} s CPU; {parallel} at a time x {threads} torch thread(s), "
                    f"{os.cpu_count()} CPUs"
                ),
            }
        )
    return rows


def _threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, help="the demo's budget_seconds")
    parser.add_argument("--corpora", nargs="*", help="corpora (default: those with targets)")
    args = parser.parse_args()
    for row in run(args.budget, args.corpora):
        print(row)
