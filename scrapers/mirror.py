"""Serve a local mirror (laid out like ../shared/corpora) over loopback HTTP.

The same network code path as a live site, offline: files are served byte for byte with
ETag and Last-Modified, and conditional GETs (If-None-Match / If-Modified-Since) get 304.

    with serve_mirror("../shared/corpora") as base:   # "http://127.0.0.1:PORT/"
        ingest("paulgraham", base + get_corpus("paulgraham").mirror_path)

    python -m scrapers.mirror ../shared/corpora --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import mimetypes
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MirrorHandler(SimpleHTTPRequestHandler):
    """Static files only (no directory listings), with validators and conditional GET."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real site
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # quiet; tests keep their own request log

    def send_head(self):
        path = Path(self.translate_path(self.path))  # refuses to leave the served directory
        if not path.is_file():
            self.send_error(404, "Not Found")
            return None
        stat = path.stat()
        etag = '"' + hashlib.sha1(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest() + '"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        if self._not_modified(etag, stat.st_mtime):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            return None
        f = open(path, "rb")  # noqa: SIM115 - the base class copies and closes it
        self.send_response(200)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", ctype)  # no charset: the bytes are served as found
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.end_headers()
        return f

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            return etag in [t.strip() for t in if_none_match.split(",")] or if_none_match == "*"
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                return int(mtime) <= email.utils.parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False


def make_server(
    directory, host: str = "127.0.0.1", port: int = 0, handler=MirrorHandler
) -> ThreadingHTTPServer:
    directory = os.fspath(Path(directory).resolve())
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"mirror directory not found: {directory}")

    class Handler(handler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


@contextlib.contextmanager
def serve_mirror(
    directory, host: str = "127.0.0.1", port: int = 0, handler=MirrorHandler
) -> Iterator[str]:
    """Serve directory on host:port (0 = any free port) in a thread; yields the base URL."""
    server = make_server(directory, host, port, handler)
    thread = threading.Thread(target=server.serve_forever, name="mirror", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a corpus mirror over loopback HTTP.")
    parser.add_argument("directory", help="folder laid out like ../shared/corpora")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.directory, args.host, args.port)
    except (FileNotFoundError, OSError) as err:
        raise SystemExit(f"mirror: error: {err}") from None
    print(f"serving {args.directory} at {base_url(server)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
