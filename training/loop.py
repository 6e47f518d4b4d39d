"""The training loop: truncated BPTT over `batch_size` parallel streams of the train split.

The train split is cut into batch_size equal streams; step k feeds chunk k (seq_len chars)
of every stream and carries the recurrent state into chunk k+1, so the model sees each
stream as one long text. After the last whole chunk the pass (epoch) restarts with a fresh
state. Evaluation runs over the whole val split the same way, without gradients.

Under torchrun (or `charflow train --nproc N`) every rank trains on its own rows of the
global batch with DistributedDataParallel; rank 0 alone evaluates, checkpoints and tracks
(see training/distributed.py).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from charflow.paths import checkpoints_dir
from charflow.version import code_version
from training import distributed
from training.checkpoint import (
    build_model,
    checkpoint_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    saved_world_size,
    set_rng_state,
)
from training.config import RESUMABLE, TrainConfig
from training.data import Dataset, corpus_name, prepare_dataset
from training.distributed import Ranks
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
    """`n` parallel streams over `ids`: inputs x[b, t] and next-character targets y[b, t].

    `rows` keeps some of them (a rank's share of the global batch)."""

    def __init__(self, ids: np.ndarray, n: int, device: torch.device, rows: slice = slice(None)):
        self.length = (len(ids) - 1) // n
        self.x = ids[: n * self.length].reshape(n, self.length)[rows]  # views of the memmap
        self.y = ids[1 : n * self.length + 1].reshape(n, self.length)[rows]
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
    return checkpoints_dir() / corpus


def resume_config(out_dir: Path, world_size: int = 1) -> TrainConfig:
    """The settings a run in `out_dir` was started with (to resume it in `world_size`
    processes: the global batch stays, split evenly over the processes)."""
    path = Path(out_dir) / "last.pt"
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    global_batch = cfg.batch_size * saved_world_size(ckpt)
    if global_batch % world_size:
        raise TrainingError(
            f"{path} has a global batch of {global_batch} streams, "
            f"which does not split over {world_size} processes"
        )
    return cfg.replace(batch_size=global_batch // world_size)


@dataclass
class Progress:
    """Everything besides model and optimizer that a checkpoint restores."""

    step: int = 0
    epoch: int = 0  # passes over the train split
    data_pos: int = 0  # offset of the next chunk inside every stream
    elapsed_seconds: float = 0.0
    best_val_loss: float = math.inf
    best_step: int = 0
    bad_evals: int = 0  # evaluations since val loss last improved
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None


class Trainer:
    """One run: model, optimizer, carried state and progress. `fit` is the loop."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Dataset,
        device,
        out_dir: Path,
        corpus: str,
        log,
        ranks=Ranks(),
    ):
        self.cfg, self.data, self.device, self.corpus, self.log = cfg, data, device, corpus, log
        self.ranks = ranks
        self.best_path, self.last_path = out_dir / "best.pt", out_dir / "last.pt"
        train_ids, self.val_ids, self.test_ids = _check_splits(cfg, data, ranks)
        streams = cfg.batch_size * ranks.world_size
        self.streams = Streams(train_ids, streams, device, ranks.rows(cfg.batch_size))
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, len(data.vocab)).to(device)
        self.net = self.model  # what the training step runs: the model, or DDP around it
        if ranks.enabled:
            ids = [device] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=device.type == "cuda",  # one kernel for the whole update on the GPU
        )
        self.param_count = count_parameters(self.model)
        self.p = Progress()
        self.state = None  # recurrent state carried from one chunk to the next
        on_gpu = cfg.bf16 and device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()
        self.tracker = None
        self._seed_rank()

    def restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.p = Progress(**{f.name: ckpt[f.name] for f in fields(Progress)})
        self.state = _to_state(ckpt["state"], self.device, self.ranks.rows(self.cfg.batch_size))
        set_rng_state(ckpt["rng"])
        self._seed_rank()

    def _seed_rank(self) -> None:
        """Ranks other than 0 draw their own dropout masks (rank 0's RNG is the saved one)."""
        if self.ranks.rank:
            torch.manual_seed(hash((self.cfg.seed, self.ranks.rank, self.p.step)) % 2**63)

    def checkpoint(self, state: list[torch.Tensor] | None) -> dict:
        """The run as it stands; `state` is the carried state of the whole global batch."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "config": self.cfg.to_params(),
            "vocab": self.data.vocab,
            "corpus": self.corpus,
            "corpus_digest": self.data.digest,
            "state": state,
            "rng": rng_state(),
            "param_count": self.param_count,
            "lr": self.opt.param_groups[0]["lr"],
            "world_size": self.ranks.world_size,
            **asdict(self.p),
        }

    def fit(self, bar) -> tuple[str, float]:
        """Train until a limit; returns why it stopped and chars/s over the training steps."""
        cfg, p, model, opt = self.cfg, self.p, self.model, self.opt
        loss_sum, n_losses = torch.zeros((), device=self.device), 0
        grad_norm = torch.zeros(())
        train_seconds, train_chars, window_chars = 0.0, 0, 0
        window_start = time.perf_counter()
        started = window_start - p.elapsed_seconds
        evaluated_at = p.step if p.history else -1  # checkpoints are made right after an eval
        stopped = "max_steps"
        model.train()
        try:
            while p.step < cfg.max_steps:
                if cfg.max_seconds and p.elapsed_seconds >= cfg.max_seconds:
                    stopped = "max_seconds"
                    break
                if p.data_pos + cfg.seq_len > self.streams.length:  # next pass over the data
                    p.data_pos, p.epoch, self.state = 0, p.epoch + 1, None
                x, y = self.streams.chunk(p.data_pos, cfg.seq_len)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg, p.step, p.elapsed_seconds)
                with self.autocast:
                    logits, state = self.net(x, self.state)
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip or math.inf
                )
                opt.step()
                self.state = detach_state(state)
                loss_sum += loss.detach()  # summed on the device: no sync per step
                n_losses += 1
                p.step += 1
                p.data_pos += cfg.seq_len
                window_chars += x.numel() * self.ranks.world_size
                p.elapsed_seconds = time.perf_counter() - started
                if cfg.max_seconds:  # ranks must agree on the rate and when to stop
                    p.elapsed_seconds = distributed.from_main(
                        self.ranks, p.elapsed_seconds, self.device
                    )
                bar.update()
                if p.step % cfg.eval_every == 0:
                    train_loss = self._mean(loss_sum) / n_losses  # waits for the device
                    seconds = time.perf_counter() - window_start
                    train_seconds, train_chars = train_seconds + seconds, train_chars + window_chars
                    stop = self.evaluate_and_save(train_loss, grad_norm, window_chars / seconds)
                    evaluated_at = p.step
                    loss_sum.zero_()
                    n_losses, window_chars = 0, 0
                    window_start = time.perf_counter()
                    if stop:
                        stopped = "early_stopping"
                        break
        except KeyboardInterrupt:
            stopped = "interrupted"
            self.log("interrupted: saving a checkpoint to resume from")
        if evaluated_at != p.step:  # the last steps since an evaluation
            seconds = max(time.perf_counter() - window_start, 1e-9)
            train_seconds, train_chars = train_seconds + seconds, train_chars + window_chars
            train_loss = self._mean(loss_sum) / n_losses if n_losses else math.nan
            self.evaluate_and_save(train_loss, grad_norm, window_chars / seconds)
        return stopped, train_chars / train_seconds if train_seconds else 0.0

    def _mean(self, loss_sum: torch.Tensor) -> float:
        return distributed.mean(self.ranks, loss_sum).item()

    def evaluate_and_save(self, train_loss: float, grad_norm, chars_per_sec: float) -> bool:
        """Every rank: gather the carried state, then rank 0 evaluates and saves and tells
        all whether patience ran out."""
        state = _from_state(self.state)
        if state is not None:
            state = [distributed.gather_rows(self.ranks, t) for t in state]
        stop = False
        if self.ranks.is_main:
            stop = self._evaluate_and_save(train_loss, grad_norm, chars_per_sec, state)
        return bool(distributed.from_main(self.ranks, float(stop), self.device))

    def _evaluate_and_save(self, train_loss: float, grad_norm, chars_per_sec: float, state):
        """Val loss, checkpoints, log line, metrics and a sample; True when patience ran out."""
        cfg, p = self.cfg, self.p
        val_loss = evaluate(self.model, self.val_ids, self.device, self.autocast)
        row = {
            "step": p.step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": self.opt.param_groups[0]["lr"],
            "grad_norm": float(grad_norm),
            "chars_per_sec": chars_per_sec,
        }
        p.history.append(row)
        improved = val_loss < p.best_val_loss
        if improved:
            p.best_val_loss, p.best_step, p.bad_evals = val_loss, p.step, 0
        else:
            p.bad_evals += 1
        payload = self.checkpoint(state)
        save_checkpoint(self.last_path, payload)
        if improved:
            save_checkpoint(self.best_path, payload)
        sample = ""
        if cfg.sample_chars:  # its own generator: the training RNG stream is left untouched
            chars = generate(self.model, self.data.vocab, length=cfg.sample_chars, seed=cfg.seed)
            sample = "".join(chars)
        self.log(
            f"step {p.step}/{cfg.max_steps} | train {train_loss:.4f} | val {val_loss:.4f} "
            f"({val_loss / LN2:.3f} bpc){' *' if improved else ''} | lr {row['lr']:.2e} | "
            f"{chars_per_sec:,.0f} chars/s | {p.elapsed_seconds:.0f} s"
        )
        if sample:
            self.log("  sample: " + sample[:120].replace("\n", " | "))
        if self.tracker:
            metrics = {k: v for k, v in row.items() if k != "step"}
            metrics.update(train_bpc=train_loss / LN2, val_bpc=val_loss / LN2)
            self.tracker.log_metrics(metrics, step=p.step)
            if sample:
                self.tracker.log_sample(p.step, sample)
        return bool(cfg.patience) and p.bad_evals >= cfg.patience

    def test_loss(self) -> float:
        """Loss of the best checkpoint on the test split (nan without one)."""
        if len(self.test_ids) < 2:
            return math.nan
        best = load_checkpoint(self.best_path, map_location=self.device)
        self.model.load_state_dict(best["model"])
        return evaluate(self.model, self.test_ids, self.device, self.autocast)


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
    ranks = distributed.ranks_from_env()
    ckpt = _load_resume(out_dir / "last.pt", cfg, ranks.world_size) if resume else None
    show = (sys.stderr.isatty() if progress is None else progress) and ranks.is_main
    log = _Log(show, muted=not ranks.is_main)
    notes: list[str] = []  # shown once the input is known to be good: errors stay one line
    data = prepare_dataset(
        source,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        progress=notes.append,
    )
    if ckpt and ckpt["corpus_digest"] != data.digest:
        raise TrainingError(f"{out_dir / 'last.pt'} was trained on another corpus text")
    if ckpt and ckpt["step"] >= cfg.max_steps:
        raise TrainingError(
            f"{out_dir / 'last.pt'} is at step {ckpt['step']}; raise max_steps to continue"
        )
    _check_splits(cfg, data, ranks)  # before the ranks join up: every rank fails alike
    with ExitStack() as stack:
        stack.callback(distributed.teardown, ranks)
        trainer = Trainer(
            cfg, data, distributed.setup(ranks, cfg.device), out_dir, corpus, log, ranks
        )
        if ckpt:
            trainer.restore(ckpt)
        p = trainer.p
        for note in notes:
            log(note)
        track = track and ranks.is_main
        if track:
            from training.tracking import RunTracker  # MLflow loads only when tracking

            tracker = RunTracker(corpus, tags=run_tags, run_id=p.run_id)
            trainer.tracker = stack.enter_context(tracker)
            p.run_id = tracker.run_id
            _log_run_inputs(trainer)
            log(f"MLflow run {tracker.run_id}: {tracker.run_url()}")
        log(
            f"{corpus}: {data.num_chars:,} chars, vocab {len(data.vocab)}, {cfg.model} "
            f"{cfg.num_layers}x{cfg.hidden_size} with {trainer.param_count:,} parameters on "
            f"{trainer.device}; train/val/test {data.split_size('train'):,}/"
            f"{len(trainer.val_ids):,}/{len(trainer.test_ids):,} chars"
        )
        bar = tqdm(total=cfg.max_steps, initial=p.step, disable=not show, dynamic_ncols=True)
        log.bar = stack.enter_context(bar)
        stopped, chars_per_sec = trainer.fit(bar)
        bar.close()
        test_loss = trainer.test_loss() if ranks.is_main else math.nan
        log(
            f"stopped ({stopped}) at step {p.step}: best val {p.best_val_loss:.4f} nats/char "
            f"({p.best_val_loss / LN2:.3f} bpc) at step {p.best_step}, test {test_loss:.4f}; "
            f"checkpoints in {out_dir}"
        )
        model = _log_run_outputs(trainer, test_loss) if track else None
    return TrainResult(
        run_id=p.run_id,
        best_val_loss=p.best_val_loss,
        test_loss=test_loss,
        steps=p.step,
        stopped_because=stopped,
        best_checkpoint=trainer.best_path,
        last_checkpoint=trainer.last_path,
        model_version=model.version if model else None,
        is_champion=model.is_champion if model else False,
        champion_reason=model.reason if model else "not tracked",
        chars_per_sec=chars_per_sec,
        history=p.history,
    )


def _log_run_inputs(t: Trainer) -> None:
    cfg, data = t.cfg, t.data
    t.tracker.log_params(
        {
            **cfg.to_params(),
            "corpus": t.corpus,
            "corpus_digest": data.digest,
            "vocab_size": len(data.vocab),
            "param_count": t.param_count,
            "device": str(t.device),
            "code_version": code_version(),
            "world_size": t.ranks.world_size,
            "global_batch_size": cfg.batch_size * t.ranks.world_size,
        }
    )
    t.tracker.log_dataset(
        name=t.corpus,
        digest=data.digest,
        source=str(data.source),
        num_chars=data.num_chars,
        vocab_size=len(data.vocab),
        num_documents=data.num_documents,
    )


def _log_run_outputs(t: Trainer, test_loss: float):
    """Test metrics, loss curve, and the best checkpoint as a registered model."""
    p = t.p
    if not math.isnan(test_loss):
        t.tracker.log_metrics({"test_loss": test_loss, "test_bpc": test_loss / LN2}, step=p.step)
    t.tracker.log_loss_curve(
        [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in p.history]
    )
    model = t.tracker.log_model(t.best_path, val_loss=p.best_val_loss, corpus_digest=t.data.digest)
    t.log(f"model version {model.version}: {model.reason}")
    return model


def _load_resume(last_path: Path, cfg: TrainConfig, world_size: int) -> dict:
    ckpt = load_checkpoint(last_path)
    saved = checkpoint_config(ckpt)
    # batch_size is per process: a run may resume in another number of processes as long
    # as the global batch (and so the streams and the carried state) stays the same
    changed = [
        f"{k} ({getattr(saved, k)!r} -> {getattr(cfg, k)!r})"
        for k in cfg.to_params()
        if k not in (*RESUMABLE, "batch_size") and getattr(saved, k) != getattr(cfg, k)
    ]
    saved_batch = saved.batch_size * saved_world_size(ckpt)
    if saved_batch != cfg.batch_size * world_size:
        changed.append(f"global batch size ({saved_batch} -> {cfg.batch_size * world_size})")
    if changed:
        raise TrainingError(f"cannot change on resume: {', '.join(changed)}")
    return ckpt


def _check_splits(cfg: TrainConfig, data: Dataset, ranks: Ranks):
    train_ids = data.split_ids("train")
    streams = cfg.batch_size * ranks.world_size
    need = streams * cfg.seq_len + 1
    if len(train_ids) < need:
        across = f" x {ranks.world_size} processes" if ranks.enabled else ""
        raise TrainingError(
            f"seq_len {cfg.seq_len} x batch_size {cfg.batch_size}{across} needs at least {need:,} "
            f"training chars; {data.name} has {len(train_ids):,} in its train split "
            "(lower --seq-len or --batch-size)"
        )
    val_ids, test_ids = data.split_ids("val"), data.split_ids("test")
    if len(val_ids) < 2:
        raise TrainingError(
            f"{data.name} has no val split to evaluate on ({len(val_ids)} chars); "
            "raise val_fraction or use a longer text"
        )
    return train_ids, val_ids, test_ids


def _from_state(state) -> list[torch.Tensor] | None:
    if state is None:
        return None
    return list(state) if isinstance(state, tuple) else [state]


def _to_state(saved: list[torch.Tensor] | None, device: torch.device, rows: slice):
    """The saved state of the global batch, cut to this rank's `rows`."""
    if saved is None:
        return None
    tensors = [t[:, rows].contiguous().to(device) for t in saved]
    return tuple(tensors) if len(tensors) == 2 else tensors[0]


class _Log:
    """Progress lines to stderr; through tqdm when a bar is on screen so they do not tear it."""

    def __init__(self, bar_shown: bool, muted: bool = False):
        self.bar_shown, self.muted = bar_shown, muted  # muted: ranks other than 0
        self.bar = None

    def __call__(self, message: str) -> None:
        if self.muted:
            return
        if self.bar is not None and self.bar_shown:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)
