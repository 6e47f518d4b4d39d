"""The checkpoint folder of a run: a new one per run unless the user names one, one writer
at a time, and never overwritten by accident.

Two trainings of one corpus used to share checkpoints/<corpus>/, so the version a run
registered could carry the other run's weights. Now every run writes its own folder
checkpoints/<corpus>/<YYYYmmdd-HHMMSS>-<hex>/ and holds an exclusive lock on it while it
writes; the lock is an flock, so the kernel drops it when the process dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import time
from pathlib import Path

from charflow.paths import checkpoints_dir
from training.errors import TrainingError

LOCK_FILE = ".lock"


def new_run_dir(corpus: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return checkpoints_dir() / corpus / f"{stamp}-{secrets.token_hex(3)}"


def latest_run_dir(corpus: str) -> Path:
    """The folder of the corpus's most recently checkpointed run (what --resume continues)."""
    root = checkpoints_dir() / corpus
    candidates = [p.parent for p in root.glob("*/last.pt")]
    candidates += (
        [root] if (root / "last.pt").is_file() else []
    )  # a folder from before runs had their own
    if not candidates:
        raise TrainingError(f"no run of {corpus} to resume under {root}; pass --out FOLDER")
    return max(candidates, key=lambda d: (d / "last.pt").stat().st_mtime)


def prepare_run_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Fail before training when the folder cannot be written, or holds a run that a fresh
    start would silently replace."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write checkpoints to {out_dir}: {err.strerror}") from None
    held = [name for name in ("best.pt", "last.pt") if (out_dir / name).exists()]
    if held and not resume and not overwrite:
        raise TrainingError(
            f"{out_dir} already holds a run ({', '.join(held)}); "
            "pass --resume to continue it or --overwrite to start over there"
        )


class RunDirLock:
    """An exclusive lock on a checkpoint folder for as long as a training writes it."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TrainingError(
                f"checkpoint folder {self.path.parent} is in use by {holder}; "
                "wait for it or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays, harmless
            self.fd = None
