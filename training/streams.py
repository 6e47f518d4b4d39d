"""The TBPTT view of a split: `n` parallel streams read chunk by chunk, and the loss over a
whole split read the same way.

A split of length L becomes n rows of L // n characters; chunk k of every row follows chunk
k-1, so a model that carries its recurrent state from chunk to chunk reads each row as one
long text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

EVAL_STREAMS = 16  # few, long streams: little of the split is read with a cold state
EVAL_CHUNK = 256


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
