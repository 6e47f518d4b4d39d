"""What a run's dataset and plot records hold: the corpus as an MLflow dataset input, and
the loss curve figure (training/tracking.py journals them; training/tracking_sender.py
sends them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from training.mlflow_setup import is_http


class CorpusDataset(MetaDataset):
    """A corpus as an MLflow dataset: name, source and digest, plus its size as the profile."""

    def __init__(self, *, source, name: str, digest: str, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _dataset_source(source: str):
    if is_http(source):
        return HTTPDatasetSource(url=source)
    uri = str(Path(source).resolve()) if Path(source).exists() else source
    # Built straight from its JSON form: MLflow's resolver warns that a local path is ambiguous.
    return get_dataset_source_from_json(json.dumps({"uri": uri}), source_type="local")


def dataset_entity(
    *,
    name: str,
    digest: str,
    source: str,
    num_chars: int,
    vocab_size: int,
    num_documents: int | None,
) -> dict:
    """The corpus as an MLflow dataset input (its entity's dict); digest = sha256 of the text.

    MLflow keeps dataset digests to 36 characters, so the input carries the first 16 hex
    digits (as `git` abbreviates) and the profile the full digest.
    """
    profile = {
        "sha256": digest,
        "num_chars": num_chars,
        "vocab_size": vocab_size,
        "num_documents": num_documents,
    }
    dataset = CorpusDataset(
        source=_dataset_source(str(source)), name=name, digest=digest[:16], profile=profile
    )
    return dataset._to_mlflow_entity().to_dictionary()


def save_loss_curve(history: list[dict], title: str, path: Path | str) -> None:
    """A PNG at `path`: train and val loss (nats/char) by step, bits/char on the right."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    for key, style in (("train_loss", dict(lw=1, alpha=0.7)), ("val_loss", dict(marker="o"))):
        points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, label=key, **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.secondary_yaxis(
        "right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2))
    ).set_ylabel("bits/char")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.savefig(path)
