"""A loopback mirror of ../shared/corpora for scraper tests: real HTTP, with a request log and
failure injection (status codes, Retry-After, redirects, delays).

    def test_x(mirror):                      # a fresh server per test
        mirror.fail("/paulgraham/avg.html", status=500, times=2)
        ... fetch mirror.url("paulgraham/articles.html") ...
        assert [r.status for r in mirror.log_for("/paulgraham/avg.html")] == [500, 500, 200]

`start_mirror(directory)` gives the same object for module-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scrapers.mirror import MirrorHandler, base_url, make_server

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict
    status: int | None = None
    at: float = 0.0  # time.monotonic() when the request arrived

    @property
    def conditional(self) -> bool:
        return "if-none-match" in self.headers or "if-modified-since" in self.headers


@dataclass
class Fault:
    status: int
    times: int  # how many more requests get it; -1 = always
    headers: dict = field(default_factory=dict)


class MirrorState:
    """What the handler consults and records; tests drive it through these methods."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[LoggedRequest] = []
        self.faults: dict[str, Fault] = {}
        self.delay = 0.0
        self.base_url = ""

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def fail(self, path: str, status: int = 500, times: int = 1, **headers) -> None:
        """The next `times` requests for path get `status` (with headers, e.g.
        Retry_After="1" -> Retry-After: 1); times=-1 means every request."""
        named = {k.replace("_", "-"): str(v) for k, v in headers.items()}
        self.faults["/" + path.lstrip("/")] = Fault(status, times, named)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.fail(path, status, -1, Location=location)

    def log_for(self, path: str) -> list[LoggedRequest]:
        path = "/" + path.lstrip("/")
        with self.lock:
            return [r for r in self.log if r.path == path]

    def requests(self) -> list[LoggedRequest]:
        with self.lock:
            return list(self.log)

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(path)
            if fault is None or fault.times == 0:
                return None
            if fault.times > 0:
                fault.times -= 1
            return fault


class InjectingHandler(MirrorHandler):
    state: MirrorState  # set per server

    def send_head(self):
        entry = LoggedRequest(
            self.command,
            self.path.split("?", 1)[0],
            {k.lower(): v for k, v in self.headers.items()},
            at=time.monotonic(),
        )
        with self.state.lock:
            self.state.log.append(entry)
        self._entry = entry
        if self.state.delay:
            time.sleep(self.state.delay)
        fault = self.state._take_fault(entry.path)
        if fault is None:
            return super().send_head()
        self.send_response(fault.status)
        for name, value in fault.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def send_response(self, code, message=None):
        entry = getattr(self, "_entry", None)
        if entry is not None and entry.status is None:
            entry.status = code
        super().send_response(code, message)


@contextlib.contextmanager
def start_mirror(directory: Path = CORPORA) -> Iterator[MirrorState]:
    state = MirrorState()
    handler = type("Handler", (InjectingHandler,), {"state": state})
    server = make_server(directory, handler=handler)
    state.base_url = base_url(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def mirror() -> Iterator[MirrorState]:
    """A fresh loopback mirror of ../shared/corpora for one test."""
    with start_mirror(CORPORA) as state:
        yield state


@pytest.fixture
def mirror_factory():
    """Start mirrors of other folders (tmp trees, a second "host" on another port)."""
    with contextlib.ExitStack() as stack:
        yield lambda directory=CORPORA: stack.enter_context(start_mirror(Path(directory)))
