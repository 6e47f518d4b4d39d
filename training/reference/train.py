"""min-char-rnn's training loop for the numpy models (`charflow scratch train`).

Adagrad, every gradient entry clipped to [-5, 5], one sequence of seq_len chars per step,
the hidden state carried from chunk to chunk and reset at the start of the text. The run is
tracked in MLflow under the trainer's names (train_loss/val_loss in nats/char, samples/
step_XXXXXX.txt, TrainConfig param names), tagged implementation=numpy-reference, so the
UI shows it beside PyTorch runs of the same corpus. No model is registered.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError
from training.reference import MODELS, build_model
from training.reference.core import evaluate, sample
from training.units import bits

CLIP = 5.0  # element-wise, as in min-char-rnn (the PyTorch trainer clips the norm instead)
IMPLEMENTATION = "numpy-reference"


@dataclass
class ScratchConfig:
    model: str = "rnn"  # "rnn" | "lstm" | "minchar"
    hidden_size: int = 100
    num_layers: int = 1
    seq_len: int = 25
    lr: float = 0.1
    max_steps: int = 5000
    sample_every: int = 1000  # 0: only after the last step
    sample_chars: int = 200
    log_every: int = 100  # train_loss is the mean over these steps
    eval_every: int = 1000  # 0: only after the last step
    eval_chars: int = 20_000  # val/test loss on the first this-many chars of each split
    seed: int = 1337

    def validate(self) -> None:
        if self.model not in MODELS:
            raise TrainingError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.model == "minchar" and self.num_layers != 1:
            raise TrainingError("minchar has exactly one layer")
        positive = ("hidden_size", "num_layers", "seq_len", "max_steps", "log_every", "eval_chars")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_every", "sample_chars", "eval_every"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TrainingError(f"lr must be > 0, got {self.lr}")


def adagrad_update(params, grads, mem, lr: float) -> None:
    for name, param in params.items():
        dparam = np.clip(grads[name], -CLIP, CLIP)  # mitigate exploding gradients
        mem[name] += dparam * dparam
        param += -lr * dparam / np.sqrt(mem[name] + 1e-8)


@dataclass
class Step:
    step: int
    loss: float  # nats/char on this step's chunk
    grad_norm: float  # L2 norm of all gradients before clipping
    state: object  # the model state after the chunk
    next_ix: int  # the char that follows the chunk: where a sample continues from


def fit(model, data: np.ndarray, seq_len: int, lr: float, steps: int) -> Iterator[Step]:
    """Train `model` in place on ids `data`; yields after every update."""
    if len(data) < seq_len + 1:
        raise TrainingError(f"training text has {len(data)} chars; need at least seq_len + 1")
    mem = {name: np.zeros_like(p) for name, p in model.params.items()}  # Adagrad memory
    p, state = 0, None
    for n in range(1, steps + 1):
        if state is None or p + seq_len + 1 > len(data):
            p, state = 0, model.initial_state()  # back to the start of the text, fresh memory
        inputs, targets = data[p : p + seq_len], data[p + 1 : p + seq_len + 1]
        loss, grads, state = model.loss(inputs, targets, state)
        grad_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        adagrad_update(model.params, grads, mem, lr)
        p += seq_len
        yield Step(n, loss / seq_len, grad_norm, state, int(targets[-1]))


@dataclass
class ScratchResult:
    run_id: str | None
    steps: int
    smooth_loss: float  # nats/char, exponentially smoothed as in min-char-rnn
    val_loss: float | None
    test_loss: float | None
    last_sample: str


def train_scratch(
    cfg: ScratchConfig,
    source: str | Path,
    *,
    corpus: str | None = None,
    track: bool = True,
    progress: bool | None = None,
) -> ScratchResult:
    """Train a numpy model on a corpus folder or UTF-8 text file; print loss and samples."""
    from training.data import prepare_dataset

    cfg.validate()
    ds = prepare_dataset(source, progress=print)
    data = np.asarray(ds.split_ids("train"), dtype=np.int64)
    held_out = {
        s: np.asarray(ds.split_ids(s)[: cfg.eval_chars], dtype=np.int64) for s in ("val", "test")
    }
    vocab_size = len(ds.vocab)
    model = build_model(cfg.model, vocab_size, cfg.hidden_size, cfg.num_layers, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    corpus = corpus or ds.name
    tracker = _tracker(corpus, cfg, track)

    def held_out_loss(split: str) -> float | None:
        ids = held_out[split]
        return evaluate(model, ids, cfg.seq_len) if len(ids) > 1 else None

    with tracker as run:
        if run is not None:
            run.log_params(run_params(cfg, ds, model, corpus))
            run.log_dataset(
                name=corpus,
                digest=ds.digest,
                source=str(ds.source),
                num_chars=ds.num_chars,
                vocab_size=vocab_size,
                num_documents=ds.num_documents,
            )
            print(f"MLflow run {run.run_id}: {run.run_url()}", flush=True)
        smooth_loss = math.log(vocab_size)  # loss of the uniform guess, where training starts
        interval, started, history = [], time.perf_counter(), []
        val_loss = test_loss = None
        text = ""
        bar = _progress_bar(cfg.max_steps, progress)
        for step in fit(model, data, cfg.seq_len, cfg.lr, cfg.max_steps):
            smooth_loss = smooth_loss * 0.999 + step.loss * 0.001
            interval.append(step.loss)
            last = step.step == cfg.max_steps
            metrics = {}
            if step.step % cfg.log_every == 0 or last:
                elapsed = time.perf_counter() - started
                train_loss = float(np.mean(interval))
                metrics |= {
                    "train_loss": train_loss,
                    "train_bpc": bits(train_loss),
                    "lr": cfg.lr,
                    "grad_norm": step.grad_norm,
                    "chars_per_sec": len(interval) * cfg.seq_len / elapsed,
                }
                history.append({"step": step.step, "train_loss": train_loss})
                interval, started = [], time.perf_counter()
            if (cfg.eval_every and step.step % cfg.eval_every == 0) or last:
                val_loss = held_out_loss("val")
                if val_loss is not None:
                    metrics |= {"val_loss": val_loss, "val_bpc": bits(val_loss)}
                    history.append({"step": step.step, "val_loss": val_loss})
            if (cfg.sample_every and step.step % cfg.sample_every == 0) or last:
                ixes = sample(model, step.state, step.next_ix, cfg.sample_chars, rng)
                text = ds.decode(ixes)
                val = f"  val {val_loss:.4f}" if val_loss is not None else ""
                bar.write(
                    f"step {step.step}/{cfg.max_steps}  smooth loss {smooth_loss:.4f} nats/char "
                    f"({bits(smooth_loss):.3f} bpc){val}\n----\n{text}\n----"
                )
                if run is not None:
                    run.log_sample(step.step, text)
            if run is not None and metrics:
                run.log_metrics(metrics, step.step)
            bar.update(1)
            bar.set_postfix_str(f"loss {smooth_loss:.3f}", refresh=False)
        bar.close()
        test_loss = held_out_loss("test")
        if run is not None:
            if test_loss is not None:
                run.log_metrics(
                    {"test_loss": test_loss, "test_bpc": bits(test_loss)}, cfg.max_steps
                )
            run.log_loss_curve(history)
        run_id = run.run_id if run is not None else None
    return ScratchResult(run_id, cfg.max_steps, smooth_loss, val_loss, test_loss, text)


def run_params(cfg: ScratchConfig, ds, model, corpus: str) -> dict:
    """TrainConfig's names where they apply, so the MLflow UI lines runs up column by column."""
    from charflow.version import code_version  # the trainer's, so both runs report it alike

    params = asdict(cfg)
    params["model"] = "rnn" if cfg.model == "minchar" else cfg.model
    params |= {
        "variant": cfg.model,
        "implementation": IMPLEMENTATION,
        "emb_size": len(ds.vocab),  # one-hot input = an identity embedding of vocab_size
        "dropout": 0.0,
        "batch_size": 1,
        "optimizer": "adagrad",
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "lr_decay": "constant",
        "clip_value": CLIP,
        "corpus": corpus,
        "corpus_digest": ds.digest,
        "vocab_size": len(ds.vocab),
        "param_count": sum(p.size for p in model.params.values()),
        "device": "cpu",
        "code_version": code_version(),
        "world_size": 1,
        "global_batch_size": 1,
    }
    return params


def _tracker(corpus: str, cfg: ScratchConfig, track: bool):
    if not track:
        return contextlib.nullcontext()
    from training.tracking import RunTracker  # mlflow loads only when tracking

    name = f"numpy-{cfg.model}-{cfg.num_layers}x{cfg.hidden_size}"
    return RunTracker(corpus, run_name=name, tags={"implementation": IMPLEMENTATION})


class _Lines:
    """Progress without a terminal: the sample/loss lines are the log; nothing else."""

    def write(self, text: str) -> None:
        print(text, flush=True)

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return _Lines()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)
