"""One run's objects: model, optimizer, the streams it reads, the carried recurrent state and
the counters a checkpoint restores — built fresh, restored from a checkpoint, or saved.

Under torchrun every rank holds its own rows of the global batch (`ranks.rows`); the model
is wrapped in DistributedDataParallel for the training step only.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from training.bigram import BigramModel
from training.checkpoint import build_model, load_checkpoint, rng_state, set_rng_state
from training.config import TrainConfig
from training.data import Dataset
from training.distributed import Ranks
from training.errors import TrainingError
from training.models import (
    CharModel,
    State,
    count_parameters,
    state_from_tensors,
)
from training.sample import Start, sample_context
from training.streams import Streams, evaluate


@dataclass
class TrainState:
    """Everything besides model and optimizer that a checkpoint restores."""

    step: int = 0
    epoch: int = 0  # passes over the train split
    data_pos: int = 0  # offset of the next chunk inside every stream
    elapsed_seconds: float = 0.0  # training steps only: evaluation is not counted
    chars_seen: int = 0  # characters read by training steps, all ranks together
    best_val_loss: float = math.inf
    best_step: int = 0
    bad_evals: int = 0  # evaluations since val loss last improved
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None


@dataclass
class Run:
    """What a training step and an evaluation touch."""

    cfg: TrainConfig
    data: Dataset
    corpus: str
    device: torch.device
    ranks: Ranks
    model: CharModel
    net: torch.nn.Module  # what the step runs: the model, or DDP around it
    opt: torch.optim.Optimizer
    streams: Streams  # this rank's rows of the train split
    val_ids: np.ndarray
    test_ids: np.ndarray
    best_path: Path
    last_path: Path
    bf16: bool = False  # autocast actually on (cfg.bf16 asks for it; only CUDA has it)
    autocast: object = nullcontext()
    carried: State | None = None  # recurrent state carried from one chunk to the next
    state: TrainState = field(default_factory=TrainState)
    sample_start: Start = Start()  # samples read this text first (training/sample.py)
    bigrams: BigramModel | None = None  # rank 0: the yardstick samples are measured with
    val_bigram_loss: float = math.nan  # ... and what real validation text scores on it

    @property
    def param_count(self) -> int:
        return count_parameters(self.model)


def check_splits(cfg: TrainConfig, data: Dataset, ranks: Ranks) -> None:
    """Fail before anything is built when a split is too small for the settings."""
    train_chars = data.split_size("train")
    need = cfg.batch_size * ranks.world_size * cfg.seq_len + 1
    if train_chars < need:
        across = f" x {ranks.world_size} processes" if ranks.enabled else ""
        raise TrainingError(
            f"seq_len {cfg.seq_len} x batch_size {cfg.batch_size}{across} needs at least {need:,} "
            f"training chars; {data.name} has {train_chars:,} in its train split "
            "(lower --seq-len or --batch-size)"
        )
    if data.split_size("val") < 2:
        raise TrainingError(
            f"{data.name} has no val split to evaluate on ({data.split_size('val')} chars); "
            "raise val_fraction or use a longer text"
        )


def build_run(
    cfg: TrainConfig, data: Dataset, corpus: str, device, out_dir: Path, ranks: Ranks
) -> Run:
    """A fresh model and optimizer on `device` (splits already checked)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(data.vocab)).to(device)
    net = model
    if ranks.enabled:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",  # one kernel for the whole update on the GPU
    )
    streams = Streams(
        data.split_ids("train"),
        cfg.batch_size * ranks.world_size,
        device,
        ranks.rows(cfg.batch_size),
    )
    on_gpu = cfg.bf16 and device.type == "cuda"
    run = Run(
        cfg=cfg,
        data=data,
        corpus=corpus,
        device=device,
        ranks=ranks,
        model=model,
        net=net,
        opt=opt,
        streams=streams,
        val_ids=data.split_ids("val")[: cfg.eval_chars],
        test_ids=data.split_ids("test"),
        best_path=out_dir / "best.pt",
        last_path=out_dir / "last.pt",
        bf16=on_gpu,
        autocast=torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext(),
    )
    train_ids = data.split_ids("train")
    run.sample_start = Start(sample_context(train_ids, data.vocab))
    if ranks.is_main:
        run.bigrams = BigramModel(train_ids, len(data.vocab))
        run.val_bigram_loss = run.bigrams.loss(run.val_ids)
    seed_rank(run)
    return run


def restore(run: Run, ckpt: dict) -> None:
    """Continue a run exactly where its checkpoint left it (weights, optimizer, RNG, data)."""
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    saved = {f.name: ckpt[f.name] for f in fields(TrainState) if f.name in ckpt}
    run.state = TrainState(**saved)  # a field added since the checkpoint keeps its default
    run.carried = state_from_tensors(ckpt["state"], run.device, run.ranks.rows(run.cfg.batch_size))
    set_rng_state(ckpt["rng"])
    seed_rank(run)


def seed_rank(run: Run) -> None:
    """Ranks other than 0 draw their own dropout masks (rank 0's RNG is the saved one)."""
    if run.ranks.rank:
        torch.manual_seed(hash((run.cfg.seed, run.ranks.rank, run.state.step)) % 2**63)


def checkpoint_payload(run: Run, carried: list[torch.Tensor] | None) -> dict:
    """The run as it stands; `carried` is the recurrent state of the whole global batch."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "config": run.cfg.to_params(),
        "vocab": run.data.vocab,
        "sample_context": run.sample_start.context,
        "corpus": run.corpus,
        "corpus_digest": run.data.digest,
        "state": carried,
        "rng": rng_state(),
        "param_count": run.param_count,
        "lr": run.opt.param_groups[0]["lr"],
        "world_size": run.ranks.world_size,
        **asdict(run.state),
    }


def load_best(run: Run) -> None:
    """The best checkpoint's weights into the run's model (what gets tested and registered)."""
    best = load_checkpoint(run.best_path, map_location=run.device)
    run.model.load_state_dict(best["model"])


def best_test_loss(run: Run) -> float:
    """Loss of the best checkpoint on the test split (nan without one)."""
    if len(run.test_ids) < 2:
        return math.nan
    load_best(run)
    return evaluate(run.model, run.test_ids, run.device, run.autocast)
