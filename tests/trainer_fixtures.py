"""Fixtures for the trainer tests: small real texts in a temporary CHARFLOW_HOME, and the CLI.

Slices of ../shared/corpora keep the tests fast; CHARFLOW_HOME keeps the encoded cache,
checkpoints and any MLflow store inside the test's own tmp folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"


@pytest.fixture
def trainer_home(tmp_path, monkeypatch) -> Iterator[Path]:
    import torch

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CHARFLOW_HOME", str(home))
    monkeypatch.chdir(home)
    # Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads
    # waiting for each other make every step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield home
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return (CORPORA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def sanguo_text() -> str:
    """三国演义 decoded from its GBK original."""
    return (CORPORA / "sanguo" / "三国演义.txt").read_bytes().decode("gbk")


@pytest.fixture
def write_text(tmp_path):
    """write_text(name, text) -> path of a UTF-8 file in the test's tmp folder."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def charflow(capsys, monkeypatch):
    """charflow(*args) -> (exit status, stdout, stderr) of the real CLI entry point, in-process."""
    from flows.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["charflow", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
