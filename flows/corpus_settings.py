"""Training defaults for a corpus, shared by `charflow train` and the training flow.

It joins the corpus registry (scrapers/) with the trainer's settings (training/), which
only flows/ may do; it lives outside the CLI so a flow does not import a command module.
"""

from __future__ import annotations

from typing import Any

from scrapers.errors import IngestError
from scrapers.registry import get_corpus
from training.config import CORPUS_DEFAULTS


def corpus_defaults(name: str) -> dict[str, Any]:
    """Training defaults for a corpus: built-in ones, then the corpus module's own."""
    try:
        registered = get_corpus(name).training_defaults
    except IngestError:  # not a registered corpus: a plain file or folder
        registered = {}
    return {**CORPUS_DEFAULTS.get(name, {}), **registered}
