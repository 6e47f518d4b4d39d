"""The command line a user meets outside the demo, through the real entry points:
usage mistakes get click's short usage error (not a traceback), `charflow services deploy`
without a server is one line, and a fresh shell reaches the stack's Prefect server with
only PREFECT_HOME set (the profile charflow writes) or after `eval "$(charflow services env)"`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.services import REPO
from tests.prefect_fixtures import free_port

BIN = Path(sys.executable).parent
# What a fresh shell does not have: anything pointing at a Prefect server or charflow home.
STACK_VARS = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILES_PATH", "CHARFLOW_HOME")


def fresh_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    return {**env, **extra}


def charflow(*args: str, env: dict | None = None, cwd: Path = REPO):
    return subprocess.run(
        [str(BIN / "charflow"), *args],
        env=env or fresh_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message, usage",
    [
        (["ingest"], "Missing argument", "Usage: charflow ingest"),
        (["ingest", "paulgraham", "--no-such-flag"], "No such option: --no-such-flag", "Usage"),
        (["no-such-command"], "No such command 'no-such-command'", "Usage: charflow [OPTIONS]"),
        (["train", "data/x", "--layers", "two"], "Invalid value", "Usage: charflow train"),
        # click knows no command context here and prints the error alone, as typer does.
        (["services", "up", "--mirror"], "Option '--mirror' requires an argument", None),
    ],
)
def test_usage_mistakes_print_the_short_usage_error(args, message, usage):
    out = charflow(*args)
    assert out.returncode == 2, out.stderr
    assert f"Error: {message}" in out.stderr
    if usage:
        assert out.stderr.startswith(usage)
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) <= 6
    assert out.stdout == ""


def test_deploy_with_the_server_down_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    for args in (["services", "deploy"], ["deploy"]):
        out = charflow(*args, env=fresh_env(CHARFLOW_HOME=str(tmp_path), PREFECT_PORT=str(port)))
        assert out.returncode == 1
        (line,) = out.stderr.strip().splitlines()
        assert line == (
            f"charflow: error: no Prefect server answers at http://127.0.0.1:{port}/api "
            "(Connection refused); start the stack with `make services` (or `charflow "
            "services up`)"
        )


def test_a_fresh_shell_reaches_the_stack(prefect_deployed, tmp_path):
    """README: `export PREFECT_HOME=$PWD/.run/prefect`, or `eval "$(charflow services env)"`;
    then `prefect deployment ...` talks to the stack's server."""
    from prefect.client.orchestration import SyncPrefectClient

    stack = prefect_deployed
    with SyncPrefectClient(stack.api_url) as client:
        ours = f"'id': '{client.read_deployment_by_name('train/paulgraham').id}'"
    profile = (stack.prefect_home / "profiles.toml").read_text()
    assert f'PREFECT_API_URL = "{stack.api_url}"' in profile

    inspect = [str(BIN / "prefect"), "deployment", "inspect", "train/paulgraham"]
    with_home = subprocess.run(
        inspect, env=fresh_env(PREFECT_HOME=str(stack.prefect_home)), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert with_home.returncode == 0, with_home.stderr
    assert ours in with_home.stdout

    shell = f'eval "$({BIN / "charflow"} services env)" && {" ".join(inspect)}'
    env = fresh_env(CHARFLOW_HOME=str(stack.home), PREFECT_PORT=str(stack.prefect_port))
    evaluated = subprocess.run(
        ["bash", "-c", shell], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert ours in evaluated.stdout

    # Not vacuous: without either, the same command finds no server of ours.
    bare = subprocess.run(
        inspect, cwd=tmp_path, env=fresh_env(
            PREFECT_HOME=str(tmp_path / "empty-home"), PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false"
        ),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bare.returncode != 0
