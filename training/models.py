"""Character-level recurrent language models: embedding -> RNN/GRU/LSTM stack -> linear head.

The recurrent core is PyTorch's fused nn.RNN / nn.GRU / nn.LSTM (cuDNN on GPU, oneDNN on
CPU), so the trainer runs at the speed of a plain PyTorch loop. `training/reference/`
re-derives the same math in numpy and is the oracle these modules are tested against.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_TYPES = ("rnn", "gru", "lstm")

# h for rnn/gru; (h, c) for lstm. Each tensor is (num_layers, batch, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class CharModel(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        model_type: str = "lstm",
        emb_size: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model type {model_type!r}; choose one of {MODEL_TYPES}")
        self.model_type = model_type
        self.embedding = nn.Embedding(vocab_size, emb_size)
        rnn_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[model_type]
        extra = {"nonlinearity": "tanh"} if model_type == "rnn" else {}
        # PyTorch applies inter-layer dropout itself; it warns when asked for it with 1 layer.
        self.rnn = rnn_cls(
            emb_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            **extra,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x: (batch, time) int64 ids -> logits (batch, time, vocab), next state."""
        out, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.head(self.drop(out)), state


def detach_state(state: State | None) -> State | None:
    """Cut the graph between BPTT chunks while carrying the values forward."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_tensors(state: State | None) -> list[torch.Tensor] | None:
    """The state as a checkpoint stores it: [h] or [h, c]."""
    if state is None:
        return None
    return list(state) if isinstance(state, tuple) else [state]


def state_from_tensors(
    saved: list[torch.Tensor] | None, device: torch.device, rows: slice = slice(None)
) -> State | None:
    """A stored state back on `device`, cut to the batch `rows` (one rank's share)."""
    if saved is None:
        return None
    tensors = [t[:, rows].contiguous().to(device) for t in saved]
    return tuple(tensors) if len(tensors) == 2 else tensors[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
