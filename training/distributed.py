"""Multi-process training with PyTorch DDP: ranks from torchrun's environment, the few
collectives the loop needs, and `launch` for `charflow train --nproc N`.

Every rank trains on its own rows of the global batch: with world size W and per-rank
batch B, the train split is cut into W*B streams and rank r reads streams [r*B, (r+1)*B).
So W ranks x B see exactly the data one process with batch W*B sees, and DDP's gradient
average makes their updates the same.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from training.device import resolve_device
from training.errors import TrainingError

# Only rank 0 evaluates; the others wait for its early-stop decision, which on a large val
# split takes longer than the default 10-minute collective timeout.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's streams among the world_size * batch_size of the global batch."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)


def ranks_from_env() -> Ranks:
    """The ranks torchrun (or `launch`) set; one process without them."""
    return Ranks(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(ranks: Ranks, device_name: str) -> torch.device:
    """The rank's device; joins the process group (NCCL on CUDA, else gloo) when distributed."""
    device = resolve_device(device_name)
    if not ranks.enabled:
        return device
    if device.type == "cuda":  # one GPU per local rank
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise TrainingError(f"multi-process training runs on cuda or cpu, not {device.type}")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return device


def teardown(ranks: Ranks) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean(ranks: Ranks, value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over all ranks (a copy; `value` itself is left alone)."""
    value = value.detach().clone()
    if ranks.enabled:
        dist.all_reduce(value)
        value /= ranks.world_size
    return value


def from_main(ranks: Ranks, value: float, device: torch.device) -> float:
    """Rank 0's `value` on every rank."""
    if not ranks.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()


def gather_rows(ranks: Ranks, t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` (layers, rows, hidden) joined along the rows: the global batch's."""
    if not ranks.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(ranks.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def _worker(fn, args, kwargs):
    """One rank under `launch`: it reports its own failure (the launcher stays quiet)."""
    try:
        return fn(*args, **kwargs)
    except TrainingError as err:
        if int(os.environ.get("RANK", 0)) == 0:  # bad input fails every rank the same way
            print(f"charflow: error: {err}", file=sys.stderr, flush=True)
    except Exception:
        traceback.print_exc()
    sys.exit(1)


def launch(nproc: int, fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in `nproc` processes on this machine (as `torchrun --standalone`
    would); returns rank 0's result. A failed rank stops the others; this exits with 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "WORLD_SIZE" in os.environ:
        raise TrainingError("--nproc cannot be used inside torchrun (it already set the ranks)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N ranks share the cores
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"charflow-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
    )
    # The agent's failure reports repeat what the failing rank printed itself.
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, _worker)(fn, args, kwargs)
    except ChildFailedError:
        sys.exit(1)
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
    return results[0]
