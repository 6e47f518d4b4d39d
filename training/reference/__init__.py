"""From-scratch numpy character models, the oracle the PyTorch models are tested against.

minchar.MinCharRNN (Karpathy's min-char-rnn), rnn.RNN and lstm.LSTM (N layers) share one
interface (see core.py); gradcheck.py checks their backward passes against finite
differences, crosscheck.py checks them against training.models.CharModel, and train.py
trains them (`charflow scratch train`). numpy only, except crosscheck.py (torch).
"""

from training.reference.core import evaluate, sample
from training.reference.lstm import LSTM
from training.reference.minchar import MinCharRNN
from training.reference.rnn import RNN

MODELS = {"minchar": MinCharRNN, "rnn": RNN, "lstm": LSTM}


def build_model(kind: str, vocab_size: int, hidden_size: int = 100, num_layers: int = 1, **kw):
    """kw: seed, init_scale."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    if kind == "minchar":
        if num_layers != 1:
            raise ValueError("min-char-rnn has exactly one layer")
        return MinCharRNN(vocab_size, hidden_size, **kw)
    return MODELS[kind](vocab_size, hidden_size, num_layers, **kw)


__all__ = ["LSTM", "MODELS", "MinCharRNN", "RNN", "build_model", "evaluate", "sample"]
