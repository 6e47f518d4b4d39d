"""Real `mlflow server` processes on loopback for the fault tests: started, paused (SIGSTOP),
resumed, killed and restarted on the same port, always stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

# Nothing the tests start phones home.
QUIET_ENV = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).ok
    except requests.RequestException:
        return False


class MlflowServer:
    """`mlflow server` on a SQLite file with proxied artifacts, in its own process group so
    that a signal reaches the server and its workers together."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float = 180) -> MlflowServer:
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, **QUIET_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        end = time.monotonic() + deadline_s
        while not answers(self.url):
            tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
            assert self.proc.poll() is None, f"mlflow server exited:\n{tail}"
            assert time.monotonic() < end, f"mlflow server not up in {deadline_s} s:\n{tail}"
            time.sleep(0.3)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """The server hangs: connections are accepted by the kernel, nothing answers."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused server cannot handle TERM
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        # gunicorn/uvicorn workers may outlive their parent for a moment
        end = time.monotonic() + 10
        while _group_alive(self.proc.pid) and time.monotonic() < end:
            time.sleep(0.1)
        if _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class SilentServer:
    """A TCP port that accepts connections (the kernel completes them) and never answers:
    what a hung server or a black-holing proxy looks like to a client."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class LaggyProxy:
    """A TCP proxy on loopback that holds every chunk a client sends for `delay_s` before
    passing it to `target_port`: a slow network between the clients and a server (it makes
    each request take a round trip of at least `delay_s`)."""

    def __init__(self, target_port: int, delay_s: float):
        import threading

        self.target_port, self.delay_s = target_port, delay_s
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        try:
            while chunk := src.recv(1 << 16):
                if delayed:
                    time.sleep(self.delay_s)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self.sock.close()
