"""The training loop: truncated BPTT over `batch_size` parallel streams of the train split.

The train split is cut into batch_size equal streams; step k feeds chunk k (seq_len chars)
of every stream and carries the recurrent state into chunk k+1, so the model sees each
stream as one long text. After the last whole chunk the pass (epoch) restarts with a fresh
state. Evaluation runs over the whole val split the same way, without gradients.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.checkpoint import (
    build_model,
    checkpoint_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from training.config import RESUMABLE, TrainConfig
from training.data import Dataset, corpus_name, prepare_dataset
from training.device import resolve_device
from training.errors import TrainingError
from training.models import count_parameters, detach_state
from training.sample import generate

EVAL_STREAMS = 16  # few, long streams: little of the split is read with a cold state
EVAL_CHUNK = 256
LN2 = math.log(2)


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


class Streams:
    """`n` parallel streams over `ids`: inputs x[b, t] and next-character targets y[b, t]."""

    def __init__(self, ids: np.ndarray, n: int, device: torch.device):
        self.length = (len(ids) - 1) // n
        self.x = ids[: n * self.length].reshape(n, self.length)  # views of the memmap
        self.y = ids[1 : n * self.length + 1].reshape(n, self.length)
        self.device = device

    def chunk(self, pos: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tensor(self.x[:, pos : pos + size]), self._tensor(self.y[:, pos : pos + size])

    def _tensor(self, part: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(part.astype(np.int64))
        if self.device.type == "cuda":  # copy from pinned memory while the GPU works
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)


def learning_rate(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warmup, then decay to min_lr_ratio * lr by steps (or by time, if that is nearer)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    horizon = cfg.lr_decay_steps or cfg.max_steps
    progress = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    if cfg.max_seconds:
        progress = max(progress, elapsed / cfg.max_seconds)
    progress = min(progress, 1.0)
    ratio = {"constant": 1.0, "linear": 1 - progress}.get(
        cfg.lr_decay, 0.5 * (1 + math.cos(math.pi * progress))
    )
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * ratio)


@torch.no_grad()
def evaluate(model, ids: np.ndarray, device: torch.device, autocast) -> float:
    """Mean loss in nats/char over the whole split (all but < EVAL_STREAMS trailing chars)."""
    streams = Streams(ids, max(1, min(EVAL_STREAMS, len(ids) - 1)), device)
    was_training = model.training
    model.eval()
    total, state = torch.zeros((), dtype=torch.float64, device=device), None
    for pos in range(0, streams.length, EVAL_CHUNK):
        x, y = streams.chunk(pos, EVAL_CHUNK)
        with autocast:
            logits, state = model(x, state)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    model.train(was_training)
    return total.item() / streams.x.size


def default_out_dir(corpus: str) -> Path:
    return Path(os.environ.get("CHARFLOW_HOME") or ".") / "checkpoints" / corpus


def resume_config(out_dir: Path) -> TrainConfig:
    """The settings a run in `out_dir` was started with (to resume it)."""
    return checkpoint_config(load_checkpoint(Path(out_dir) / "last.pt"))


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import version

    return version("charflow")


def train(
    cfg: TrainConfig,
    source: str | Path,
    *,
    corpus: str | None = None,
    out_dir: Path | None = None,
    resume: bool = False,
    track: bool = True,
    run_tags: dict | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train on `source` (corpus folder or UTF-8 file); checkpoints go to out_dir/{best,last}.pt.

    Everything that can be wrong with the input is checked before anything is written.
    """
    cfg.validate()
    corpus = corpus or corpus_name(source)
    out_dir = Path(out_dir) if out_dir else default_out_dir(corpus)
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    ckpt = _load_resume(last_path, cfg) if resume else None
    show = sys.stderr.isatty() if progress is None else progress
    log = _Log(show)
    notes: list[str] = []  # shown once the input is known to be good: errors stay one line
    data = prepare_dataset(
        source,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        progress=notes.append,
    )
    if ckpt and ckpt["corpus_digest"] != data.digest:
        raise TrainingError(f"{last_path} was trained on another corpus text (digest differs)")
    device = resolve_device(cfg.device)
    train_streams, val_ids, test_ids = _check_splits(cfg, data, device)
    for note in notes:
        log(note)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(data.vocab)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    s = {  # everything besides model and optimizer that a checkpoint restores
        "step": 0,
        "epoch": 0,
        "data_pos": 0,
        "elapsed_seconds": 0.0,
        "best_val_loss": math.inf,
        "best_step": 0,
        "bad_evals": 0,
        "history": [],
        "run_id": None,
    }
    state = None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        s.update({k: ckpt[k] for k in s})
        state = _to_state(ckpt["state"], device)
        set_rng_state(ckpt["rng"])
    if s["step"] >= cfg.max_steps:
        raise TrainingError(f"{last_path} is at step {s['step']}; raise max_steps to continue")
    param_count = count_parameters(model)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.bf16 and device.type == "cuda"
        else nullcontext()
    )

    def checkpoint() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "config": cfg.to_params(),
            "vocab": data.vocab,
            "corpus": corpus,
            "corpus_digest": data.digest,
            "state": _from_state(state),
            "rng": rng_state(),
            "param_count": param_count,
            "lr": learning_rate(cfg, s["step"], s["elapsed_seconds"]),
            **s,
        }

    with ExitStack() as stack:
        tracker = None
        if track:
            from training.tracking import RunTracker  # MLflow loads only when tracking

            tracker = stack.enter_context(RunTracker(corpus, tags=run_tags, run_id=s["run_id"]))
            s["run_id"] = tracker.run_id
            tracker.log_params(
                {
                    **cfg.to_params(),
                    "corpus": corpus,
                    "corpus_digest": data.digest,
                    "vocab_size": len(data.vocab),
                    "param_count": param_count,
                    "device": str(device),
                    "code_version": code_version(),
                    "world_size": 1,
                    "global_batch_size": cfg.batch_size,
                }
            )
            tracker.log_dataset(
                name=corpus,
                digest=data.digest,
                source=str(data.source),
                num_chars=data.num_chars,
                vocab_size=len(data.vocab),
                num_documents=data.num_documents,
            )
            log(f"MLflow run {tracker.run_id}: {tracker.run_url()}")
        log(
            f"{corpus}: {data.num_chars:,} chars, vocab {len(data.vocab)}, "
            f"{cfg.model} {cfg.num_layers}x{cfg.hidden_size} with {param_count:,} parameters "
            f"on {device}; train/val/test {data.split_size('train'):,}/"
            f"{len(val_ids):,}/{len(test_ids):,} chars"
        )

        bar = stack.enter_context(
            tqdm(total=cfg.max_steps, initial=s["step"], disable=not show, dynamic_ncols=True)
        )
        log.bar = bar

        def evaluate_and_save(train_loss: float, grad_norm: float, chars_per_sec: float) -> bool:
            """Log metrics and a sample, write checkpoints; True when patience ran out."""
            val_loss = evaluate(model, val_ids, device, autocast)
            lr = opt.param_groups[0]["lr"]
            row = {
                "step": s["step"],
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "chars_per_sec": chars_per_sec,
            }
            s["history"].append(row)
            improved = val_loss < s["best_val_loss"]
            if improved:
                s["best_val_loss"], s["best_step"], s["bad_evals"] = val_loss, s["step"], 0
            else:
                s["bad_evals"] += 1
            payload = checkpoint()
            save_checkpoint(last_path, payload)
            if improved:
                save_checkpoint(best_path, payload)
            text = ""
            if cfg.sample_chars:
                chars = generate(model, data.vocab, length=cfg.sample_chars, seed=cfg.seed)
                text = "".join(chars)
            bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
            log(
                f"step {s['step']}/{cfg.max_steps} | train {train_loss:.4f} | val "
                f"{val_loss:.4f} ({val_loss / LN2:.3f} bpc){' *' if improved else ''} | "
                f"lr {lr:.2e} | {chars_per_sec:,.0f} chars/s | {s['elapsed_seconds']:.0f} s"
            )
            if text:
                log("  sample: " + text[:120].replace("\n", " | "))
            if tracker:
                metrics = {**row, "train_bpc": train_loss / LN2, "val_bpc": val_loss / LN2}
                del metrics["step"]
                tracker.log_metrics(metrics, step=s["step"])
                if text:
                    tracker.log_sample(s["step"], text)
            return bool(cfg.patience) and s["bad_evals"] >= cfg.patience

        chunk = cfg.seq_len
        loss_sum, n_losses, grad_norm = torch.zeros((), device=device), 0, torch.zeros(())
        train_seconds, train_chars = 0.0, 0
        window_start, window_chars = time.perf_counter(), 0
        started = time.perf_counter() - s["elapsed_seconds"]
        stopped = "max_steps"
        evaluated_at = s["step"] if ckpt else -1  # checkpoints are written right after an eval
        model.train()
        try:
            while s["step"] < cfg.max_steps:
                if cfg.max_seconds and s["elapsed_seconds"] >= cfg.max_seconds:
                    stopped = "max_seconds"
                    break
                if s["data_pos"] + chunk > train_streams.length:  # next pass over the data
                    s["data_pos"], s["epoch"], state = 0, s["epoch"] + 1, None
                x, y = train_streams.chunk(s["data_pos"], chunk)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg, s["step"], s["elapsed_seconds"])
                with autocast:
                    logits, state = model(x, state)
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip or math.inf
                )
                opt.step()
                state = detach_state(state)
                loss_sum += loss.detach()  # summed on the device: no sync per step
                n_losses += 1
                s["step"] += 1
                s["data_pos"] += chunk
                window_chars += x.numel()
                s["elapsed_seconds"] = time.perf_counter() - started
                bar.update()
                if s["step"] % cfg.eval_every == 0:
                    train_loss = loss_sum.item() / n_losses  # waits for the device
                    seconds = time.perf_counter() - window_start
                    train_seconds, train_chars = train_seconds + seconds, train_chars + window_chars
                    stop = evaluate_and_save(train_loss, float(grad_norm), window_chars / seconds)
                    evaluated_at = s["step"]
                    loss_sum.zero_()
                    n_losses, window_chars = 0, 0
                    window_start = time.perf_counter()
                    if stop:
                        stopped = "early_stopping"
                        break
        except KeyboardInterrupt:
            stopped = "interrupted"
            log("interrupted: saving a checkpoint to resume from")
        if evaluated_at != s["step"]:
            seconds = max(time.perf_counter() - window_start, 1e-9)
            train_seconds, train_chars = train_seconds + seconds, train_chars + window_chars
            train_loss = loss_sum.item() / n_losses if n_losses else math.nan
            evaluate_and_save(train_loss, float(grad_norm), window_chars / seconds)
        bar.close()

        best = load_checkpoint(best_path, map_location=device)
        model.load_state_dict(best["model"])
        test_loss = evaluate(model, test_ids, device, autocast) if len(test_ids) > 1 else math.nan
        log(
            f"stopped ({stopped}) at step {s['step']}: best val {s['best_val_loss']:.4f} "
            f"nats/char ({s['best_val_loss'] / LN2:.3f} bpc) at step {s['best_step']}, "
            f"test {test_loss:.4f}; checkpoints in {out_dir}"
        )
        version, is_champion, reason = None, False, "not tracked"
        if tracker:
            if not math.isnan(test_loss):
                tracker.log_metrics(
                    {"test_loss": test_loss, "test_bpc": test_loss / LN2}, step=s["step"]
                )
            tracker.log_loss_curve(
                [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in s["history"]]
            )
            result = tracker.log_model(
                best_path, val_loss=s["best_val_loss"], corpus_digest=data.digest
            )
            version, is_champion, reason = result.version, result.is_champion, result.reason
            log(f"model version {version}: {reason}")
    return TrainResult(
        run_id=s["run_id"],
        best_val_loss=s["best_val_loss"],
        test_loss=test_loss,
        steps=s["step"],
        stopped_because=stopped,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        model_version=version,
        is_champion=is_champion,
        champion_reason=reason,
        chars_per_sec=train_chars / train_seconds if train_seconds else 0.0,
        history=s["history"],
    )


def _load_resume(last_path: Path, cfg: TrainConfig) -> dict:
    ckpt = load_checkpoint(last_path)
    saved = checkpoint_config(ckpt)
    changed = [
        f"{k} ({getattr(saved, k)!r} -> {getattr(cfg, k)!r})"
        for k in cfg.to_params()
        if k not in RESUMABLE and getattr(saved, k) != getattr(cfg, k)
    ]
    if changed:
        raise TrainingError(f"cannot change on resume: {', '.join(changed)}")
    return ckpt


def _check_splits(cfg: TrainConfig, data: Dataset, device: torch.device):
    train_ids = data.split_ids("train")
    need = cfg.batch_size * cfg.seq_len + 1
    if len(train_ids) < need:
        raise TrainingError(
            f"seq_len {cfg.seq_len} x batch_size {cfg.batch_size} needs at least {need:,} "
            f"training chars; {data.name} has {len(train_ids):,} in its train split "
            "(lower --seq-len or --batch-size)"
        )
    val_ids, test_ids = data.split_ids("val"), data.split_ids("test")
    if len(val_ids) < 2:
        raise TrainingError(
            f"{data.name} has no val split to evaluate on ({len(val_ids)} chars); "
            "raise val_fraction or use a longer text"
        )
    return Streams(train_ids, cfg.batch_size, device), val_ids, test_ids


def _from_state(state) -> list[torch.Tensor] | None:
    if state is None:
        return None
    return list(state) if isinstance(state, tuple) else [state]


def _to_state(saved: list[torch.Tensor] | None, device: torch.device):
    if saved is None:
        return None
    tensors = [t.to(device) for t in saved]
    return tuple(tensors) if len(tensors) == 2 else tensors[0]


class _Log:
    """Progress lines to stderr; through tqdm when a bar is on screen so they do not tear it."""

    def __init__(self, bar_shown: bool):
        self.bar_shown = bar_shown
        self.bar = None

    def __call__(self, message: str) -> None:
        if self.bar is not None and self.bar_shown:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)
