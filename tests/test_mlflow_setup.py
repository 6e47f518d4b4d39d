"""The MLflow store setup: importing it does nothing, the quiet environment is filled in
only where unset, and the CLI has it in place before mlflow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from training import mlflow_setup

# Variables that switch MLflow telemetry off on their own; the subprocesses below drop them
# so that only the code under test can be what keeps MLflow quiet.
TELEMETRY_SWITCHES = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "CI")


def test_env_defaults_fill_in_only_what_is_unset(monkeypatch):
    for key in mlflow_setup.ENV_DEFAULTS:
        monkeypatch.setenv(key, "before")  # so that monkeypatch restores every key afterwards
    monkeypatch.delenv("GIT_PYTHON_REFRESH")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    mlflow_setup.set_mlflow_env_defaults()
    assert os.environ["GIT_PYTHON_REFRESH"] == "quiet"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "before"  # the user's value
    assert os.environ["DO_NOT_TRACK"] == "before"


def test_importing_the_tracking_modules_changes_nothing(tmp_path):
    """mlflow_setup and sample import no MLflow module; no module sets the environment."""
    script = textwrap.dedent(
        """
        import os, sys
        before = dict(os.environ)
        import training.mlflow_setup, training.sample
        print(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # from here on mlflow may load
        before["MLFLOW_DISABLE_TELEMETRY"] = "true"
        import training.tracking, training.registry, training.pyfunc
        print(sorted(set(os.environ.items()) ^ set(before.items())))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_SWITCHES}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["[]", "[]"]


def test_cli_sets_the_quiet_environment_before_mlflow_is_imported(tmp_path):
    # A probe sees the environment at the moment mlflow is first imported (and then makes
    # sure it is quiet anyway, so a failing test still sends nothing).
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os, sys

            class Probe:
                def find_spec(self, name, path=None, target=None):
                    if name == "mlflow":
                        sys.meta_path.remove(self)
                        seen = [os.environ.get(k, "unset") for k in
                                ("MLFLOW_DISABLE_TELEMETRY", "GIT_PYTHON_REFRESH")]
                        with open(os.environ["PROBE_OUT"], "w") as f:
                            f.write(" ".join(seen))
                        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
                    return None

            sys.meta_path.insert(0, Probe())
            """
        )
    )
    seen = tmp_path / "seen.txt"
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_SWITCHES}
    env.pop("GIT_PYTHON_REFRESH", None)
    env |= {
        "PYTHONPATH": os.pathsep.join([str(probe), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PROBE_OUT": str(seen),
        "CHARFLOW_HOME": str(tmp_path / "home"),
    }
    missing = (tmp_path / "no-model").as_uri()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sample", "--model-uri", missing],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "cannot load MLflow model" in done.stderr, done.stderr
    assert seen.read_text() == "true quiet"


def test_artifacts_of_a_sqlite_store_sit_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow_setup.artifact_location(uri, "三国 演义") == (
        (tmp_path / "artifacts" / "三国_演义").as_uri()
    )
    assert mlflow_setup.artifact_location("http://127.0.0.1:5000", "x") is None
    assert mlflow_setup.sqlite_path("sqlite:///:memory:") is None
    assert mlflow_setup.sqlite_path(uri) == Path(tmp_path / "mlflow.db").resolve()
