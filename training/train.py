"""One training, start to finish: check the input, build or resume the run, fit it while
reporting to the console and MLflow, then score the best checkpoint on the test split and
register it as a model version.

This is the function the CLI, the Prefect flows and the tests call; the loop itself is
training/loop.py.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from charflow.version import code_version, git_commit
from training import distributed
from training.checkpoint import load_resumable, repair_best
from training.config import TrainConfig
from training.data import corpus_manifest, corpus_name, prepare_dataset
from training.errors import TrainingError
from training.learned import log_learned, what_it_learned
from training.loop import fit
from training.mlflow_names import default_run_name
from training.reporting import Console, MLflowReporter, Reporter, Reporters
from training.run import Run, best_test_loss, build_run, check_splits, load_best, restore
from training.run_dir import RunDirLock, latest_run_dir, new_run_dir, prepare_run_dir
from training.tracking_journal import unended_run
from training.units import bits

# Manifest fields a run keeps as corpus/stats.json (scrapers/store.py writes them).
CORPUS_STATS = ("name", "source", "documents", "chars", "vocab_size", "skipped", "cleaning")


@dataclass
class TrainResult:
    run_id: str | None
    best_val_loss: float
    test_loss: float  # nan when the corpus has no test split
    steps: int
    stopped_because: str  # max_steps | max_seconds | early_stopping | interrupted
    best_checkpoint: Path
    last_checkpoint: Path
    model_version: str | None
    is_champion: bool
    champion_reason: str
    chars_per_sec: float = 0.0  # training steps only, evaluation excluded
    history: list[dict] = field(default_factory=list)


def train(
    cfg: TrainConfig,
    source: str | Path,
    *,
    corpus: str | None = None,
    out_dir: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    track: bool = True,
    run_name: str | None = None,
    run_tags: dict | None = None,
    progress: bool | None = None,
    reporter: Reporter | None = None,
    register: bool = True,
) -> TrainResult:
    """Train on `source` (corpus folder or UTF-8 file); checkpoints go to out_dir/{best,last}.pt.

    `reporter` hears every evaluation besides the console and MLflow (a sweep's pruner).
    `register=False` (a sweep's children) logs the run but registers no model version.
    Without `out_dir` the run gets a folder of its own under checkpoints/<corpus>/ (with
    `resume`: the corpus's latest). A folder that holds a run is only continued (`resume`)
    or replaced (`overwrite`). Ctrl-C saves a checkpoint, registers nothing and re-raises
    KeyboardInterrupt; a diverged run keeps its last good checkpoint and fails.

    Everything that can be wrong with the input is checked before anything is written.
    """
    cfg.validate()
    corpus = corpus or corpus_name(source)
    ranks = distributed.ranks_from_env()
    if out_dir is None and ranks.enabled:  # a folder drawn per process would differ per rank
        raise TrainingError("under torchrun every rank must write one folder: pass --out")
    if out_dir is None:
        out_dir = latest_run_dir(corpus) if resume else new_run_dir(corpus)
    out_dir = Path(out_dir)
    ckpt = None
    if resume:  # a run killed after its last step resumes to be finished (tested, registered)
        ckpt = load_resumable(out_dir / "last.pt", cfg, ranks.world_size, unended_run(out_dir))
    track = track and ranks.is_main
    if track:  # a dead tracking server is one line now, not minutes of retries later
        from training.mlflow_setup import check_tracking_store

        check_tracking_store()
    notes: list[str] = []  # shown once the input is known to be good: errors stay one line
    data = prepare_dataset(
        source,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        progress=notes.append,
    )
    if ckpt and ckpt["corpus_digest"] != data.digest:
        raise TrainingError(f"{out_dir / 'last.pt'} was trained on another corpus text")
    check_splits(cfg, data, ranks)  # before the ranks join up: every rank fails alike
    if ranks.is_main:
        prepare_run_dir(out_dir, resume=resume, overwrite=overwrite)
    with ExitStack() as stack:
        if ranks.is_main:  # the only rank that writes the folder
            stack.enter_context(RunDirLock(out_dir))
        stack.callback(distributed.teardown, ranks)
        run = build_run(cfg, data, corpus, distributed.setup(ranks, cfg.device), out_dir, ranks)
        if ckpt:
            if ranks.is_main:  # under the folder's lock
                repair_best(out_dir, ckpt)
            restore(run, ckpt)
        console = Reporter()  # ranks other than 0 stay quiet
        if ranks.is_main:
            show_bar = sys.stderr.isatty() if progress is None else progress
            console = Console(show_bar, cfg.max_steps, run.state.step)
            stack.callback(console.close)
        report: Reporter = Reporters(console, reporter) if reporter else console
        tracker = None
        if track:
            from training.tracking import RunTracker  # MLflow loads only when tracking

            tracker = stack.enter_context(
                RunTracker(
                    corpus,
                    run_name or default_run_name(corpus, cfg),
                    tags={**source_tags(), **(run_tags or {})},
                    run_id=run.state.run_id,
                    journal_dir=out_dir,  # records wait here while the store is away
                    notify=report.log,
                )
            )
            run.state.run_id = tracker.run_id
            _log_run_inputs(tracker, run)
            report = Reporters(report, MLflowReporter(tracker))
        for note in notes:
            report.log(note)
        if tracker:
            report.log(f"MLflow run {tracker.run_id}: {tracker.run_url()}")
        report.log(_describe(run))

        stopped, chars_per_sec = fit(run, report)

        s = run.state
        if stopped == "diverged":
            kept = (
                f"last good checkpoint: {run.last_path}" if run.last_path.exists() else "none saved"
            )
            raise TrainingError(f"training diverged at step {s.step} (non-finite loss); {kept}")
        if stopped == "interrupted":
            report.log(f"interrupted at step {s.step}; continue with --resume --out {out_dir}")
            raise KeyboardInterrupt  # the run ends KILLED; an interrupted model is not registered
        test_loss = best_test_loss(run) if ranks.is_main else math.nan
        report.log(
            f"stopped ({stopped}) at step {s.step}: best val {s.best_val_loss:.4f} nats/char "
            f"({bits(s.best_val_loss):.3f} bpc) at step {s.best_step}, test {test_loss:.4f}; "
            f"checkpoints in {out_dir}"
        )
        model = None
        if tracker:
            _log_run_outputs(tracker, run, test_loss, report)
            model = _register(tracker, run, report) if register else None
    return TrainResult(
        run_id=s.run_id,
        best_val_loss=s.best_val_loss,
        test_loss=test_loss,
        steps=s.step,
        stopped_because=stopped,
        best_checkpoint=run.best_path,
        last_checkpoint=run.last_path,
        model_version=model.version if model and not model.deferred else None,
        is_champion=model.is_champion if model else False,
        champion_reason=model.reason if model else "not tracked",
        chars_per_sec=chars_per_sec,
        history=s.history,
    )


def source_tags() -> dict[str, str]:
    """The commit that ran, under MLflow's own tag: MLflow finds it only when the entry
    script lies in the checkout, and `charflow` is a console script in the venv."""
    commit = git_commit()
    return {"mlflow.source.git.commit": commit} if commit else {}


def _describe(run: Run) -> str:
    cfg, data = run.cfg, run.data
    return (
        f"{run.corpus}: {data.num_chars:,} chars, vocab {len(data.vocab)}, {cfg.model} "
        f"{cfg.num_layers}x{cfg.hidden_size} with {run.param_count:,} parameters on "
        f"{run.device}; train/val/test {data.split_size('train'):,}/"
        f"{len(run.val_ids):,}/{len(run.test_ids):,} chars"
    )


def _log_run_inputs(tracker, run: Run) -> None:
    cfg, data = run.cfg, run.data
    tracker.log_params(
        {
            **cfg.to_params(),
            "bf16": run.bf16,  # as used, not as asked: a CPU run has no bf16 autocast
            "corpus": run.corpus,
            "corpus_digest": data.digest,
            "vocab_size": len(data.vocab),
            "param_count": run.param_count,
            "device": str(run.device),
            "code_version": code_version(),
            "world_size": run.ranks.world_size,
            "global_batch_size": cfg.batch_size * run.ranks.world_size,
        }
    )
    tracker.log_dataset(
        name=run.corpus,
        digest=data.digest,
        source=str(data.source),
        num_chars=data.num_chars,
        vocab_size=len(data.vocab),
        num_documents=data.num_documents,
    )
    manifest = corpus_manifest(data.source)
    if manifest:  # audit a source in the UI: what the corpus holds and what cleaning removed
        stats = {k: manifest.get(k) for k in CORPUS_STATS if k in manifest}
        tracker.log_text(json.dumps(stats, indent=1, ensure_ascii=False), "corpus/stats.json")


def _log_run_outputs(tracker, run: Run, test_loss: float, report: Reporter) -> None:
    """What the best checkpoint learned, its test metrics, the loss curve."""
    s = run.state
    load_best(run)
    learned = what_it_learned(run)
    log_learned(tracker, learned, s.step)
    report.log(
        f"samples: copy rate {learned.metrics['sample_copy_rate']:.2f}, bigram loss "
        f"{learned.metrics['sample_bigram_loss']:.2f} (validation text: "
        f"{learned.metrics['val_bigram_loss']:.2f}) nats/char"
    )
    if not math.isnan(test_loss):
        tracker.log_metrics({"test_loss": test_loss, "test_bpc": bits(test_loss)}, step=s.step)
    from training.symbols import log_symbol_report  # a corpus of symbols: against counting

    if summary := log_symbol_report(tracker, run, learned.samples):
        report.log(summary)
    tracker.log_loss_curve(
        [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in s.history]
    )


def _register(tracker, run: Run, report: Reporter):
    """The best checkpoint as a version of charflow-<corpus>; champion if it is better."""
    from training.registration import register_model

    s = run.state
    model = register_model(
        tracker, run.best_path, val_loss=s.best_val_loss, corpus_digest=run.data.digest
    )
    # deferred: the store was away; the reason says how the version gets registered later
    report.log(model.reason if model.deferred else f"model version {model.version}: {model.reason}")
    return model
