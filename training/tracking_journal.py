"""The tracking journal: what a run has logged that the MLflow store has not confirmed yet,
kept on disk beside the run's checkpoints until the store has it.

In the run folder:

    mlflow-pending.jsonl   one JSON object a line, appended as the run logs:
                             {"seq": 12, "run_id": "…", "op": "metrics", "metrics": [[key,
                              value, timestamp_ms, step], …]}  (ops: training/tracking_sender.py)
                             {"ack": 12}    the store has every record up to seq 12
    mlflow-pending/        files that records point to (a plot, a checkpoint to register)
    mlflow-run.json        the run this folder's tracker writes into: run id, store URI;
                           removed once the run's end has reached the store
    mlflow-pending.lock    flock'd by the one process that writes the journal

A record is written (to the OS, so a SIGKILL cannot lose it) before it is sent; records
are sent in order and acknowledged cumulatively. Sending a record twice changes nothing:
MLflow keeps one copy of an identical metric (same key, value, timestamp and step), and
params, tags, artifacts and run status are set, not added. So a process killed at any
moment leaves each record it logged either in the store or here, and `charflow sync
RUN_DIR` (or the next tracker in the folder) sends the rest.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from training.errors import TrainingError
from training.mlflow_setup import error_reason

JOURNAL = "mlflow-pending.jsonl"
FILES = "mlflow-pending"
RUN_FILE = "mlflow-run.json"
LOCK = "mlflow-pending.lock"
COMPACT_BYTES = 1 << 20  # rewrite the journal when all is sent and it has grown past this

# MLflow error codes that mean "the store refuses this record" (sending it again will not
# help); anything else — no connection, a timeout, HTTP 5xx, a locked SQLite file — is
# worth another try later.
REFUSED = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CUSTOMER_UNAUTHORIZED",
        "FEATURE_DISABLED",
        "ENDPOINT_NOT_FOUND",
    }
)


def is_transient(err: BaseException) -> bool:
    """True when a failed store call may succeed later (the store is away or busy)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code not in REFUSED
    if isinstance(err, OSError):  # connection errors (requests' too), a full disk
        return True
    try:
        import requests
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - both come with mlflow
        return False
    return isinstance(err, requests.RequestException | sqlalchemy.exc.OperationalError)


def reason(err: BaseException) -> str:
    """A store error in a few words: the OS's reason when there is one, else the first line."""
    return error_reason(err)


class Journal:
    """The records of a folder's tracker, in memory and (with a folder) on disk.

    `folder=None` keeps records in memory only (a run without a folder: library use);
    files go to a temporary folder then."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.path = self.folder / JOURNAL if self.folder else None
        self._files_dir = self.folder / FILES if self.folder else None
        self._lock_fd: int | None = None
        self._fh = None
        self._mutex = threading.Lock()
        self._records: list[dict] = []  # pending, in seq order
        self._next_seq = 1
        self._closed = False

    # opening and closing

    def open(self) -> Journal:
        """Take the folder's journal (one writer at a time) and load what an earlier process
        left pending. A live writer: one-line TrainingError naming it."""
        if self.folder is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise TrainingError(
                f"the MLflow journal in {self.folder} is in use by process {holder} "
                "(it sends its own records)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self._records, last = read_pending(self.path)
        now = time.monotonic()
        for record in self._records:
            record["_t"] = now
        self._next_seq = last + 1
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open on purpose
        return self

    def close(self) -> None:
        """Release the journal; with nothing pending, remove it and its files."""
        with self._mutex:
            self._closed = True
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if not self._records:
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
                if self._files_dir is not None:
                    shutil.rmtree(self._files_dir, ignore_errors=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # records

    def append(self, record: dict) -> dict:
        """Write one record (to the OS before this returns) and queue it for sending."""
        with self._mutex:
            if self._closed:
                raise RuntimeError("the tracking journal is closed")
            record = {"seq": self._next_seq, **record}
            self._next_seq += 1
            if self._fh is not None:
                self._fh.write(json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n")
                self._fh.flush()
            record["_t"] = time.monotonic()
            self._records.append(record)
            return record

    def pending(self) -> list[dict]:
        with self._mutex:
            return list(self._records)

    def oldest_age(self) -> float:
        """Seconds the oldest unsent record has waited (0 when none)."""
        with self._mutex:
            return time.monotonic() - self._records[0]["_t"] if self._records else 0.0

    def ack(self, seq: int) -> None:
        """The store has every record up to `seq`: forget them and the files they named."""
        with self._mutex:
            if self._closed:  # a send finished after the tracker gave up: replayed later
                return
            done = [r for r in self._records if r["seq"] <= seq]
            self._records = [r for r in self._records if r["seq"] > seq]
            if self._fh is not None:
                self._fh.write(json.dumps({"ack": seq}) + "\n")
                self._fh.flush()
                if not self._records and self._fh.tell() > COMPACT_BYTES:
                    self._fh.close()
                    self._write_atomic(self.path, json.dumps({"ack": seq}) + "\n")
                    self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        for record in done:
            if record.get("file"):
                shutil.rmtree(self.files_dir / Path(record["file"]).parent, ignore_errors=True)

    def sync(self) -> None:
        """Make the records written so far survive a power cut, not only a killed process."""
        with self._mutex:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())

    @property
    def files_dir(self) -> Path:
        if self._files_dir is None:
            self._files_dir = Path(tempfile.mkdtemp(prefix="charflow-pending-"))
        return self._files_dir

    def new_file_slot(self, name: str) -> tuple[Path, str]:
        """(absolute path, path relative to files_dir) for a file a record will name."""
        slot = f"{self._next_seq:08d}-{os.urandom(4).hex()}"
        path = self.files_dir / slot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, f"{slot}/{name}"

    # the run this folder's tracker writes into

    def read_run(self) -> dict | None:
        if self.folder is None:
            return None
        try:
            return json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def write_run(self, info: dict) -> None:
        if self.folder is not None:
            self._write_atomic(self.folder / RUN_FILE, json.dumps(info, indent=1) + "\n")

    def forget_run(self) -> None:
        if self.folder is not None:
            (self.folder / RUN_FILE).unlink(missing_ok=True)

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def unended_run(folder: Path) -> str | None:
    """The MLflow run a tracker in `folder` started and never ended (its process died before
    the run's end was recorded), if any. A run whose end waits in the journal for the store
    is ended: `charflow sync` sends it."""
    info = Journal(folder).read_run()
    if not info or not info.get("run_id"):
        return None
    records, _ = read_pending(folder / JOURNAL)
    if any(r.get("op") == "end" and r.get("run_id") == info["run_id"] for r in records):
        return None
    return info["run_id"]


def read_pending(path: Path | None) -> tuple[list[dict], int]:
    """(records not yet acknowledged, the highest seq seen) of a journal file. A torn last
    line (the process died mid-write) is ignored: its record was never acknowledged, and
    the writer never got past it."""
    if path is None or not path.exists():
        return [], 0
    records: dict[int, dict] = {}
    acked = last = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if "ack" in item:
                acked = max(acked, int(item["ack"]))
            elif "seq" in item:
                records[int(item["seq"])] = item
                last = max(last, int(item["seq"]))
    last = max(last, acked)
    return [records[s] for s in sorted(records) if s > acked], last
