"""The model as MLflow sees it: a pyfunc whose one artifact is the charflow checkpoint file.

Prime strings in, sampled strings out. The checkpoint inside loads with
`torch.load(path, weights_only=True)`: `download_checkpoint` + `charflow sample` run nothing
pickled. `mlflow.pyfunc.load_model` does unpickle the model object: load only models you trust.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from training.errors import TrainingError
from training.mlflow_setup import configure_mlflow

CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint file among the pyfunc artifacts

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),  # one prime text per row
    outputs=Schema([ColSpec(DataType.string)]),
    params=ParamSchema(
        [
            ParamSpec("length", DataType.long, 200),
            ParamSpec("temperature", DataType.double, 1.0),
            ParamSpec("top_k", DataType.long, 0),  # 0: sample from the whole vocabulary
            ParamSpec("seed", DataType.long, -1),  # -1: a fresh random seed
            ParamSpec("device", DataType.string, "cpu"),
        ]
    ),
)


@contextmanager
def quiet_model_logging():
    """Hide MLflow's advice that does not apply: no input example (it would run the model
    at logging time) and pickling the small CharflowModel instance (it is imported by name)."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def pip_requirements() -> list[str]:
    """Given explicitly: MLflow's inference of them runs the model."""
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__}", "numpy"]


class CharflowModel(mlflow.pyfunc.PythonModel):
    """A charflow checkpoint as an MLflow pyfunc.

    `mlflow.pyfunc.load_model("models:/charflow-<corpus>@champion").predict(["ROMEO:"],
    params={"length": 300, "temperature": 0.8, "seed": 1})` returns one sampled text per
    prime. Needs the charflow package installed where the model is loaded.
    """

    def load_context(self, context) -> None:
        self.checkpoint = Path(context.artifacts[CHECKPOINT_ARTIFACT])

    # The DataFrame hint keeps MLflow to the explicit SIGNATURE (its params included); MLflow
    # turns a str, a list of str or a one-column DataFrame into this DataFrame.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        from training.sample import sample_texts  # lazy: torch loads only when sampling

        primes = [str(p) for p in model_input.iloc[:, 0]]
        opts = {**{p.name: p.default for p in SIGNATURE.params.params}, **(params or {})}
        return sample_texts(
            self.checkpoint,
            primes,
            length=int(opts["length"]),
            temperature=float(opts["temperature"]),
            top_k=int(opts["top_k"]) or None,
            seed=None if int(opts["seed"]) < 0 else int(opts["seed"]),
            device=str(opts["device"]),
        )


def download_checkpoint(model_uri: str, dst_dir: Path | None = None) -> Path:
    """Local path of the checkpoint inside an MLflow model.

    Accepts models:/charflow-<corpus>@champion, models:/charflow-<corpus>/3,
    runs:/<run_id>/model or models:/<model_id>. Downloads into `dst_dir` (default: a new
    temporary folder).
    """
    configure_mlflow()
    dst = Path(dst_dir) if dst_dir else Path(tempfile.mkdtemp(prefix="charflow-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    try:
        repo = get_artifact_repository(model_uri)
        mlmodel = Path(repo.download_artifacts("MLmodel", dst_path=str(dst)))
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        entry = flavor.get("artifacts", {}).get(CHECKPOINT_ARTIFACT)
        if entry is None:
            raise TrainingError(f"{model_uri} is not a charflow model (no checkpoint artifact)")
        return Path(repo.download_artifacts(entry["path"], dst_path=str(dst)))
    except MlflowException as e:
        first_line = str(e.message).strip().splitlines()[0] if str(e.message).strip() else e
        raise TrainingError(f"cannot load MLflow model {model_uri}: {first_line}") from e
