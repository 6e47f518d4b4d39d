"""Invariant: a training killed with SIGKILL at any moment and continued with `--resume`
ends as if it had never been killed: the same final step count, one MLflow run with every
evaluation logged exactly once, FINISHED, and one registered version (issue 15).

The real `charflow train` on a SQLite store, killed 20 times at moments drawn from a seeded
generator. A moment is a delay after something the training says, so that the kills land
in every phase however fast the machine is: after the start (imports, the store check,
the run's creation), after `MLflow run …` (before the first checkpoint), after a segment's
first `step …` line (training steps, evaluations, checkpoints being written, the journal
and its sender: anchored to an evaluation, not to the clock, so that a loaded machine
still gets kills past the first checkpoint), after `stopped (…)` (test loss, samples, the loss
curve) and after `samples: …` (the registration). Each kill is followed by `--resume`;
a run killed before its first checkpoint has nothing to resume (`--resume` says so in one
line) and starts again in its folder, whose new tracker ends the dead run KILLED.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import CORPORA
from tests.faults.servers import QUIET_ENV

CHARFLOW = Path(sys.executable).with_name("charflow")
CORPUS = "killed"
MAX_STEPS = 400  # more than the 13 training segments reach (<= ~25 steps each on an idle core)
EVAL_EVERY = 10  # an evaluation and a checkpoint every ~0.3 s of training
KILLS = 20
# A model big enough that training takes seconds (~35 ms a step on one idle core): most
# kills land while it trains, and the 20 segments together do not finish it.
MODEL = (
    "--preset",
    "tiny",
    "--device",
    "cpu",
    "--hidden",
    "256",
    "--batch-size",
    "32",
    "--seq-len",
    "64",
)


def kill_moments(seed: int) -> list[tuple[str, float]]:
    """(the line a kill waits for, seconds after it) of each kill; "" is the start."""
    rng = random.Random(seed)
    middle = [("", rng.uniform(0.5, 4.5)) for _ in range(3)]  # a resume's start, or first steps
    # training: steps, evaluations, checkpoints being written, the journal's sender
    middle += [("step ", rng.uniform(0.0, 0.5)) for _ in range(KILLS - 7)]
    rng.shuffle(middle)
    return [
        ("", rng.uniform(0.3, 2.5)),  # imports: nothing written yet
        ("MLflow run ", rng.uniform(0.0, 0.1)),  # a run, and no checkpoint yet
        *middle,
        ("stopped (", rng.uniform(0.0, 0.4)),  # after the last checkpoint: test loss, samples
        ("samples: ", rng.uniform(0.0, 0.8)),  # the loss curve, the registration
    ]


class Training:
    """A `charflow train` process and the lines it writes to stderr, each with its time."""

    def __init__(self, argv: list, env: dict[str, str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [CHARFLOW, "train", *map(str, argv)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.out = ""
        self._readers = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_out(self) -> None:
        self.out = self.proc.stdout.read()

    def seen(self, prefix: str) -> float | None:
        """When the first line starting with `prefix` came ("" is the process's start)."""
        if not prefix:
            return self.started
        return next((t for t, line in list(self.lines) if line.startswith(prefix)), None)

    def kill_at(self, prefix: str, delay: float, deadline_s: float = 120) -> bool:
        """SIGKILL `delay` s after the line starting with `prefix`; False when the process
        ended by itself first."""
        end = time.monotonic() + deadline_s
        while self.proc.poll() is None:
            seen = self.seen(prefix)
            if seen is not None and time.monotonic() >= seen + delay:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.wait()
                return True
            assert time.monotonic() < end, f"no {prefix!r} line in {deadline_s} s:\n{self.err}"
            time.sleep(0.005)
        self.wait()
        return False

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()

    @property
    def err(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def run_id(self) -> str | None:
        line = next((line for _, line in self.lines if line.startswith("MLflow run ")), None)
        return line.split()[2].rstrip(":") if line else None


@pytest.mark.timeout(600)
def test_twenty_kills_each_followed_by_resume_end_as_one_uninterrupted_run(tmp_path: Path):
    text = tmp_path / f"{CORPUS}.txt"
    text.write_bytes((CORPORA / "tinyshakespeare" / "input.txt").read_bytes()[:200_000])
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env |= {"CHARFLOW_HOME": str(tmp_path / "home")}
    fresh = [text, *MODEL, "--max-steps", MAX_STEPS, "--eval-every", EVAL_EVERY, "--out", out]
    resume = [text, "--resume", "--out", out]  # the settings are the checkpoint's

    started, restarts, kills = 0, 0, []  # restarts: --resume found no checkpoint
    run_ids: set[str] = set()

    def start() -> Training:
        nonlocal started, restarts
        started += 1
        if started == 1:
            return Training(fresh, env)
        if (out / "last.pt").exists():
            return Training(resume, env)
        refused = Training(resume, env)  # killed before its first checkpoint
        assert refused.wait() == 1
        assert refused.err.splitlines() == [
            f"charflow: error: no such checkpoint: {out / 'last.pt'}"
        ], refused.err
        restarts += 1
        return Training(fresh, env)  # what is left to do: start again in its folder

    for k, (prefix, delay) in enumerate(kill_moments(seed=15)):
        training = start()
        try:
            killed = training.kill_at(prefix, delay)
        finally:
            training.close()
        if training.run_id():
            run_ids.add(training.run_id())
        assert killed, (
            f"kill {k + 1} of {kills}: the training ended first, exit "
            f"{training.proc.returncode}\n{training.err[-3000:]}"
        )
        step = (
            torch.load(out / "last.pt", weights_only=True)["step"]
            if (out / "last.pt").exists()
            else 0
        )
        kills.append((prefix, round(delay, 2), step))

    final = start()
    try:
        code = final.wait(timeout=300)
    finally:
        final.close()
    assert code == 0, final.err[-3000:]
    assert f"{MAX_STEPS} steps (max_steps)" in final.out, final.out
    run_ids.add(final.run_id())

    # The kills hit every phase: before the first checkpoint (the run started again), in
    # training, and after the last checkpoint (each resume then only finished the run).
    assert restarts >= 1, kills
    assert any(0 < step < MAX_STEPS for *_, step in kills), kills
    assert [step for *_, step in kills[-2:]] == [MAX_STEPS, MAX_STEPS], kills
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["step"] == MAX_STEPS, kills
    run_id = last["run_id"]
    assert final.run_id() == run_id

    client = MlflowClient(uri, uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Every run the segments made is ended: the one that trained FINISHED, those killed
    # before their first checkpoint KILLED (by the tracker of the next start in the folder).
    every = client.search_runs([run.info.experiment_id], max_results=1000)
    assert {r.info.run_id: r.info.status for r in every} == {
        r: ("FINISHED" if r == run_id else "KILLED")
        for r in run_ids | {r.info.run_id for r in every}
    }, kills

    # The history: each evaluation once, none missing, with the values the checkpoint keeps.
    evaluations = list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
    for key in ("train_loss", "val_loss", "lr", "grad_norm"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [step for step, _ in history] == evaluations, (key, kills)
        kept = [row[key] for row in last["history"]]
        assert [value for _, value in history] == pytest.approx(kept, rel=1e-9), (key, kills)
    assert [row["step"] for row in last["history"]] == evaluations

    # best.pt is the evaluation with the lowest val loss, and what was registered.
    val = [(row["val_loss"], row["step"]) for row in last["history"]]
    best_val, best_step = min(val)
    assert (best["step"], best["best_val_loss"]) == (best_step, best_val), kills
    versions = client.search_model_versions(f"name = 'charflow-{CORPUS}'")
    assert [(v.run_id, float(v.tags["val_loss"])) for v in versions] == [(run_id, best_val)]
    version = str(versions[0].version)
    assert run.data.tags["model_version"] == version
    champion = client.get_model_version_by_alias(f"charflow-{CORPUS}", "champion")
    assert str(champion.version) == version
    assert math.isfinite(float(run.data.metrics["test_loss"]))
    assert not (out / "mlflow-pending.jsonl").exists()  # the store has every record
