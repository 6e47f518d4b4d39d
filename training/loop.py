"""The training loop: truncated BPTT over the parallel streams of the train split.

Step k feeds chunk k (seq_len chars) of every stream and carries the recurrent state into
chunk k+1, so the model sees each stream as one long text; after the last whole chunk the
pass (epoch) restarts with a fresh state. Every `eval_every` steps the whole val split is
evaluated, checkpoints are written and the reporter hears about it.

Under torchrun every rank trains its own rows of the global batch with DDP; rank 0 alone
evaluates, checkpoints and reports (see training/distributed.py).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from training import distributed
from training.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.models import detach_state, state_tensors
from training.reporting import Reporter
from training.run import Run, checkpoint_payload
from training.sample import generate
from training.streams import evaluate


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


class Throughput:
    """Characters per second of training steps, evaluation time left out: a window per
    evaluation interval, and the total over all windows."""

    def __init__(self) -> None:
        self.seconds, self.chars, self.window_chars = 0.0, 0, 0
        self.restart()

    def restart(self) -> None:
        self.window_start = time.perf_counter()

    def add(self, chars: int) -> None:
        self.window_chars += chars

    def lap(self) -> float:
        """Close the window: its rate (the next window starts at `restart`)."""
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        rate = self.window_chars / seconds
        self.seconds, self.chars, self.window_chars = (
            self.seconds + seconds,
            self.chars + self.window_chars,
            0,
        )
        return rate

    @property
    def overall(self) -> float:
        return self.chars / self.seconds if self.seconds else 0.0


def fit(run: Run, report: Reporter) -> tuple[str, float]:
    """Train until a limit; returns why it stopped and chars/s over the training steps."""
    cfg, s, model, opt = run.cfg, run.state, run.model, run.opt
    loss_sum, n_losses = torch.zeros((), device=run.device), 0  # summed on the device: no sync
    grad_norm = torch.zeros(())
    speed = Throughput()
    started = time.perf_counter() - s.elapsed_seconds
    evaluated_at = s.step if s.history else -1  # a checkpoint is always right after an eval

    def evaluate_now() -> bool:
        nonlocal n_losses, evaluated_at
        mean = distributed.mean(run.ranks, loss_sum).item() / n_losses if n_losses else math.nan
        stop = evaluate_and_save(run, report, mean, float(grad_norm), speed.lap())
        loss_sum.zero_()
        n_losses, evaluated_at = 0, s.step
        speed.restart()
        return stop

    stopped = "max_steps"
    model.train()
    try:
        while s.step < cfg.max_steps:
            if cfg.max_seconds and s.elapsed_seconds >= cfg.max_seconds:
                stopped = "max_seconds"
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, s.step, s.elapsed_seconds)
            if s.data_pos + cfg.seq_len > run.streams.length:  # next pass over the data
                s.data_pos, s.epoch, run.carried = 0, s.epoch + 1, None
            x, y = run.streams.chunk(s.data_pos, cfg.seq_len)
            with run.autocast:
                logits, carried = run.net(x, run.carried)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.grad_clip or math.inf
            )
            opt.step()
            run.carried = detach_state(carried)
            loss_sum += loss.detach()
            n_losses += 1
            s.step += 1
            s.data_pos += cfg.seq_len
            speed.add(x.numel() * run.ranks.world_size)
            s.elapsed_seconds = time.perf_counter() - started
            if cfg.max_seconds:  # ranks must agree on the schedule and when to stop
                s.elapsed_seconds = distributed.from_main(run.ranks, s.elapsed_seconds, run.device)
            report.step()
            if s.step % cfg.eval_every == 0 and evaluate_now():
                stopped = "early_stopping"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        report.log("interrupted: saving a checkpoint to resume from")
    if evaluated_at != s.step:  # the steps since the last evaluation
        evaluate_now()
    return stopped, speed.overall


def evaluate_and_save(
    run: Run, report: Reporter, train_loss: float, grad_norm: float, chars_per_sec: float
) -> bool:
    """Every rank: gather the carried state; rank 0 evaluates, checkpoints and reports; all
    learn whether patience ran out."""
    carried = state_tensors(run.carried)
    if carried is not None:
        carried = [distributed.gather_rows(run.ranks, t) for t in carried]
    stop = False
    if run.ranks.is_main:
        stop = _evaluate_and_save(run, report, train_loss, grad_norm, chars_per_sec, carried)
    return bool(distributed.from_main(run.ranks, float(stop), run.device))


def _evaluate_and_save(run: Run, report: Reporter, train_loss, grad_norm, chars_per_sec, carried):
    """Val loss, checkpoints, a sample, the report; True when patience ran out."""
    cfg, s = run.cfg, run.state
    val_loss = evaluate(run.model, run.val_ids, run.device, run.autocast)
    row = {
        "step": s.step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": run.opt.param_groups[0]["lr"],
        "grad_norm": grad_norm,
        "chars_per_sec": chars_per_sec,
        "seconds": s.elapsed_seconds,
    }
    s.history.append(row)
    improved = val_loss < s.best_val_loss
    if improved:
        s.best_val_loss, s.best_step, s.bad_evals = val_loss, s.step, 0
    else:
        s.bad_evals += 1
    payload = checkpoint_payload(run, carried)
    save_checkpoint(run.last_path, payload)
    if improved:
        save_checkpoint(run.best_path, payload)
    sample = ""
    if cfg.sample_chars:  # its own generator: the training RNG stream is left untouched
        sample = "".join(
            generate(run.model, run.data.vocab, length=cfg.sample_chars, seed=cfg.seed)
        )
    report.evaluation(row, sample, improved)
    return bool(cfg.patience) and s.bad_evals >= cfg.patience
