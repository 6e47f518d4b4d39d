"""Checkpoints: one dict of tensors and plain values (str, int, float, bool, None, lists,
dicts), so `torch.load(path, weights_only=True)` reads it without running any pickled code.

Keys (format "charflow-checkpoint", version 1):
    model, optimizer        state dicts
    config                  TrainConfig fields
    vocab                   list of single-character strings; id = index
    corpus, corpus_digest   the corpus name and the sha256 of its text
    step, epoch, data_pos   optimizer steps taken; pass over the train split; offset of the
                            next chunk inside each of the batch_size streams
    elapsed_seconds, lr     training time so far and the current learning rate (the schedule
                            is a pure function of step and elapsed time, so it has no state)
    state                   the recurrent state carried into the next chunk: list of
                            (layers, batch, hidden) tensors ([h] or [h, c]), or None
    best_val_loss, best_step, bad_evals   early stopping
    history                 [{step, train_loss, val_loss, ...}] one row per evaluation
    rng                     torch / cuda / numpy / python generator states
    param_count             number of model parameters
    world_size              processes the run trained in (absent before DDP: 1); config's
                            batch_size is per process and `state` covers the global batch of
                            world_size * batch_size streams, so any world size dividing it
                            can resume
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from training.config import RESUMABLE, TrainConfig
from training.errors import TrainingError
from training.models import CharModel

FORMAT = "charflow-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically and durably: a crash mid-write leaves the previous checkpoint intact,
    and a checkpoint is on disk once this returns.

    The temp file is fsynced before the rename, or a power cut could keep the rename and
    lose the data (an empty or torn file under the checkpoint's name, on file systems that
    do not order the two); the folder is fsynced after it, so the new name is on disk too.
    tests/test_store.py checks these calls on a real file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_DIRECTORY)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and allowlist errors all mean "not ours / damaged"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingError(f"{path} is not a readable checkpoint ({reason[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainingError(f"{path} is not a charflow checkpoint")
    if ckpt.get("version") != VERSION:
        raise TrainingError(f"{path} has checkpoint version {ckpt.get('version')}; need {VERSION}")
    return ckpt


def checkpoint_config(ckpt: dict) -> TrainConfig:
    try:
        return TrainConfig().replace(**ckpt["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise TrainingError(f"checkpoint config does not match this version: {err}") from None


def saved_world_size(ckpt: dict) -> int:
    return int(ckpt.get("world_size", 1))


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


def load_resumable(
    last_path: Path, cfg: TrainConfig, world_size: int, unended_run: str | None = None
) -> dict:
    """The checkpoint to resume with `cfg`, refused when a setting that shapes the math changed.

    batch_size is per process: a run may resume in another number of processes as long as
    the global batch (and so the streams and the carried state) stays the same. A checkpoint
    at max_steps resumes only when its MLflow run is `unended_run` (the folder's tracker
    never ended it: the process was killed after the last step, while testing or
    registering); the resume then only finishes the run."""
    ckpt = load_checkpoint(last_path)
    saved = checkpoint_config(ckpt)
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
    finishing = unended_run is not None and ckpt.get("run_id") == unended_run
    finishing = finishing and ckpt["step"] == cfg.max_steps
    if ckpt["step"] >= cfg.max_steps and not finishing:
        raise TrainingError(f"{last_path} is at step {ckpt['step']}; raise max_steps to continue")
    return ckpt


def repair_best(out_dir: Path, ckpt: dict) -> None:
    """best.pt is written after last.pt: a process killed between the two leaves last.pt
    counting its own step as the best while best.pt is an evaluation behind (or missing).
    That last.pt is then the best checkpoint: write it as best.pt before resuming."""
    if ckpt["best_step"] != ckpt["step"]:
        return
    best_path = Path(out_dir) / "best.pt"
    if best_path.exists() and load_checkpoint(best_path)["step"] == ckpt["step"]:
        return
    save_checkpoint(best_path, ckpt)


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu") -> CharModel:
    cfg = checkpoint_config(ckpt)
    model = build_model(cfg, len(ckpt["vocab"]))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise TrainingError(f"checkpoint weights do not fit its config: {first[:160]}") from None
    return model.to(device)


def build_model(cfg: TrainConfig, vocab_size: int) -> CharModel:
    return CharModel(
        vocab_size,
        model_type=cfg.model,
        emb_size=cfg.emb_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        dropout=cfg.dropout,
    )


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
