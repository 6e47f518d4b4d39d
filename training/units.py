"""Units of loss: the trainer minimises nats per character; people compare bits per character.

One place for the conversion, so a report, a log line and an MLflow metric cannot disagree.
"""

from __future__ import annotations

import math
from typing import TypeVar

# Natural log of 2: nats per bit.
LN2 = math.log(2)

# float, numpy array or tensor: anything that divides by a float keeps its own type.
Number = TypeVar("Number")


def bits(nats: Number) -> Number:
    """Cross-entropy in nats → bits (per character)."""
    return nats / LN2  # type: ignore[operator]


def nats(bits: Number) -> Number:
    """Bits → nats: the inverse of `bits`, for axes and thresholds written in bits."""
    return bits * LN2  # type: ignore[operator]
