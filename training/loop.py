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
from training.run import Run, TrainState, checkpoint_payload
from training.sample import generate
from training.streams import evaluate

# A run bounded by time or characters evaluates at least this often, however short.
EVAL_POINTS = 20


def learning_rate(cfg: TrainConfig, step: int, elapsed: float, chars: int = 0) -> float:
    """Linear warmup, then decay to min_lr_ratio * lr by steps (or by time or characters,
    whichever budget runs out first)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    horizon = cfg.lr_decay_steps or cfg.max_steps
    progress = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    if cfg.max_seconds:
        progress = max(progress, elapsed / cfg.max_seconds)
    if cfg.max_chars:
        progress = max(progress, chars / cfg.max_chars)
    progress = min(progress, 1.0)
    ratio = {"constant": 1.0, "linear": 1 - progress}.get(
        cfg.lr_decay, 0.5 * (1 + math.cos(math.pi * progress))
    )
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * ratio)


def evaluation_due(cfg: TrainConfig, s: TrainState) -> bool:
    """Every eval_every steps, and each time a twentieth of a time or character budget passes."""
    if s.step % cfg.eval_every == 0:
        return True
    last = s.history[-1] if s.history else {}

    def crossed(key: str, now: float, budget: float | None) -> bool:
        every = budget / EVAL_POINTS if budget else 0
        return bool(every) and now // every > last.get(key, 0) // every

    return crossed("seconds", s.elapsed_seconds, cfg.max_seconds) or crossed(
        "chars", s.chars_seen, cfg.max_chars
    )


def budget_spent(cfg: TrainConfig, s: TrainState) -> str | None:
    """Which limit stops the run now, if any."""
    if s.step >= cfg.max_steps:
        return "max_steps"
    if cfg.max_seconds and s.elapsed_seconds >= cfg.max_seconds:
        return "max_seconds"
    if cfg.max_chars and s.chars_seen >= cfg.max_chars:
        return "max_chars"
    return None


class TrainClock:
    """Seconds and characters of training steps, evaluation left out: a window per
    evaluation interval for the rate logged with it, and totals for the run's throughput."""

    def __init__(self, seconds_before: float) -> None:
        self.before = seconds_before  # training seconds of earlier windows and sessions
        self.seconds, self.chars = 0.0, 0  # this session's closed windows
        self.start_window()

    def start_window(self) -> None:
        self.window_start, self.window_chars = time.perf_counter(), 0

    def add(self, chars: int) -> None:
        self.window_chars += chars

    @property
    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.window_start

    def lap(self) -> float:
        """Close the window; its rate in chars/s (the next one opens at start_window)."""
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        self.before += seconds
        self.seconds += seconds
        self.chars += self.window_chars
        return self.window_chars / seconds

    @property
    def overall(self) -> float:
        return self.chars / self.seconds if self.seconds else 0.0


def fit(run: Run, report: Reporter) -> tuple[str, float]:
    """Train until a limit; returns why it stopped and chars/s over the training steps."""
    cfg, s, model, opt = run.cfg, run.state, run.model, run.opt
    loss_sum, n_losses = torch.zeros((), device=run.device), 0  # summed on the device: no sync
    grad_norm = torch.zeros(())
    clock = TrainClock(s.elapsed_seconds)
    evaluated_at = s.step if s.history else -1  # a checkpoint is always right after an eval

    def evaluate_now() -> str | None:
        nonlocal n_losses, evaluated_at
        mean = distributed.mean(run.ranks, loss_sum).item() / n_losses
        stop = evaluate_and_save(run, report, mean, float(grad_norm), clock.lap())
        loss_sum.zero_()
        n_losses, evaluated_at = 0, s.step
        clock.start_window()
        return stop

    stopped = None
    model.train()
    try:
        while not (stopped := budget_spent(cfg, s)):
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, s.step, s.elapsed_seconds, s.chars_seen)
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
            s.chars_seen += x.numel() * run.ranks.world_size
            clock.add(x.numel() * run.ranks.world_size)
            s.elapsed_seconds = clock.elapsed
            if cfg.max_seconds:  # ranks must agree on the schedule and when to stop
                s.elapsed_seconds = distributed.from_main(run.ranks, s.elapsed_seconds, run.device)
            report.step()
            if evaluation_due(cfg, s) and (stop := evaluate_now()):
                return stop, clock.overall
    except KeyboardInterrupt:
        stopped = "interrupted"
        report.log("interrupted: saving a checkpoint to resume from")
    # The steps since the last evaluation; the run ends for the reason it stopped, unless
    # they diverged.
    if evaluated_at != s.step and n_losses and evaluate_now() == "diverged":
        stopped = "diverged"
    return stopped, clock.overall


# Why an evaluation stops the run, as the number rank 0 broadcasts to the others.
STOPS = (None, "early_stopping", "diverged")


def evaluate_and_save(
    run: Run, report: Reporter, train_loss: float, grad_norm: float, chars_per_sec: float
) -> str | None:
    """Every rank: gather the carried state; rank 0 evaluates, checkpoints and reports; all
    learn whether to stop: early_stopping (patience ran out, or a reporter asked), diverged."""
    carried = state_tensors(run.carried)
    if carried is not None:
        carried = [distributed.gather_rows(run.ranks, t) for t in carried]
    stop = None
    if run.ranks.is_main:
        stop = _evaluate_and_save(run, report, train_loss, grad_norm, chars_per_sec, carried)
    return STOPS[int(distributed.from_main(run.ranks, float(STOPS.index(stop)), run.device))]


def _evaluate_and_save(run: Run, report: Reporter, train_loss, grad_norm, chars_per_sec, carried):
    """Val loss, a sample, the report, checkpoints; why to stop, if the run should.

    The report comes before the checkpoint: a run resumed from this checkpoint has every
    metric up to it. A non-finite loss writes nothing: the last good checkpoint stays."""
    cfg, s = run.cfg, run.state
    val_loss = evaluate(run.model, run.val_ids, run.device, run.autocast)
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return "diverged"
    row = {
        "step": s.step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": run.opt.param_groups[0]["lr"],
        "grad_norm": grad_norm,
        "chars_per_sec": chars_per_sec,
        "seconds": s.elapsed_seconds,
        "chars": s.chars_seen,
    }
    s.history.append(row)
    improved = val_loss < s.best_val_loss
    if improved:
        s.best_val_loss, s.best_step, s.bad_evals = val_loss, s.step, 0
    else:
        s.bad_evals += 1
    sample = ""
    if cfg.sample_chars:  # its own generator: the training RNG stream is left untouched
        chars = generate(
            run.model,
            run.data.vocab,
            length=cfg.sample_chars,
            seed=cfg.seed,
            start=run.sample_start,
        )
        sample = "".join(chars)
        # Does the sample read like the corpus? Beside what real text scores (bigram.py).
        row["sample_bigram_loss"] = run.bigrams.texts_loss([sample], run.data.vocab)
        row["val_bigram_loss"] = run.val_bigram_loss
    asked_to_stop = bool(report.evaluation(row, sample, improved))
    report.flush()
    payload = checkpoint_payload(run, carried)
    save_checkpoint(run.last_path, payload)
    if improved:  # a kill before this write: a resume repairs best.pt (checkpoint.repair_best)
        save_checkpoint(run.best_path, payload)
    if asked_to_stop or (cfg.patience and s.bad_evals >= cfg.patience):
        return "early_stopping"
    return None
