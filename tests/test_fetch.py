"""The polite fetcher against a real loopback HTTP server (tests/mirror_fixtures.py)."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scrapers.errors import IngestError
from scrapers.fetch import Fetcher, cache_key, host_of, normalize_url, same_host
from scrapers.index_pages import fetch_pages, read_index
from scrapers.registry import GatherContext, RawItem, Skipped

AVG = "paulgraham/avg.html"
REPO = Path(__file__).resolve().parent.parent


def fast_fetcher(**kwargs) -> Fetcher:
    kwargs = {"rate_limit": None, "backoff": 0.01, **kwargs}
    return Fetcher(**kwargs)


def test_normalize_url_canonical_forms():
    assert normalize_url("HTTP://Example.COM:80/a/b.html#frag") == "http://example.com/a/b.html"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("http://example.com:8080/x?q=1") == "http://example.com:8080/x?q=1"


def test_index_pages_resolve_dedupe_and_stay_on_host(mirror_factory, tmp_path):
    site = tmp_path / "site"
    (site / "essays").mkdir(parents=True)
    (site / "essays" / "avg.html").write_text("avg")
    server = mirror_factory(site)
    other = mirror_factory()  # another host: the same address on another port
    spam = other.url("paulgraham/spam.html")
    lines = [
        "avg.html|Beating the Averages",
        "avg.html#f1n|a footnote",  # the same page: the first label stays
        "./avg.html|again",
        f"HTTP://{urlsplit(server.base_url).netloc}/essays/gone.html|Gone",
        f"{spam}|Spam",
        "mailto:pg@example.com|mail",
        "#top|top",
    ]
    (site / "essays" / "index.txt").write_text("\n".join(lines))
    server.redirect("start.txt", "/essays/index.txt")  # links resolve against where it ended
    with fast_fetcher() as fetcher:
        ctx = GatherContext("t", "", None, tmp_path / "raw", fetcher, {}, log=lambda _: None)
        index = read_index(
            ctx,
            server.url("start.txt"),
            "test index",
            lambda body: [line.split("|") for line in body.decode().splitlines()],
        )
        assert index.url == server.url("essays/index.txt")
        assert index.pages == {
            server.url("essays/avg.html"): "Beating the Averages",
            server.url("essays/gone.html"): "Gone",
        }
        assert index.offsite == [Skipped(spam, f"off-site link ({urlsplit(spam).netloc})")]
        pages = {url: {"n": n} for n, url in enumerate(index.pages)}
        avg, gone = fetch_pages(ctx, pages)
    assert avg == RawItem(server.url("essays/avg.html"), avg.path, {"n": 0})
    assert avg.path.read_text() == "avg"
    assert gone.source == server.url("essays/gone.html") and "404" in gone.reason
    assert other.requests() == []


def test_unreadable_index_names_what_it_is(mirror, tmp_path):
    with fast_fetcher() as fetcher:
        ctx = GatherContext("t", "", None, tmp_path, fetcher, {}, log=lambda _: None)
        with pytest.raises(IngestError, match=r"cannot read the test index .*: HTTP 404"):
            read_index(ctx, mirror.url("nothing/here.html"), "test index", lambda body: [])


def test_before_request_hook_runs_before_every_request(mirror, tmp_path):
    mirror.fail(AVG, status=500, times=2)
    seen: list[tuple[str, int]] = []  # (host, requests the server had seen by then)
    hook = lambda host: seen.append((host, len(mirror.requests())))  # noqa: E731
    with fast_fetcher(before_request=hook) as fetcher:
        assert fetcher.get(mirror.url(AVG), tmp_path).ok
    host = host_of(mirror.url(AVG))
    assert seen == [(host, 0), (host, 1), (host, 2), (host, 3)]  # robots.txt, 500, 500, 200
    assert len(mirror.requests()) == 4


def test_get_downloads_into_hash_named_cache_with_sidecar(mirror, tmp_path, corpora_dir):
    with fast_fetcher() as fetcher:
        result = fetcher.get(mirror.url(AVG), tmp_path)
    assert result.ok and result.status == 200 and not result.from_cache
    assert result.path.read_bytes() == (corpora_dir / AVG).read_bytes()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{cache_key(mirror.url(AVG))}.body", f"{cache_key(mirror.url(AVG))}.json"]
    meta = json.loads((tmp_path / names[1]).read_text())
    assert meta["url"] == mirror.url(AVG) and "etag" in meta["headers"]
    # robots.txt was asked for first, with a User-Agent naming charflow
    requests = mirror.requests()
    assert [r.path for r in requests] == ["/robots.txt", "/" + AVG]
    assert all("charflow" in r.headers["user-agent"] for r in requests)


def test_cache_names_cannot_escape_raw_dir(mirror, tmp_path):
    raw = tmp_path / "raw"
    with fast_fetcher() as fetcher:
        for path in ["../../../etc/passwd", "..%2F..%2Fescape.html", "a/../../b.html"]:
            fetcher.get(mirror.base_url + path, raw)
        fetcher.get(mirror.url(AVG), raw)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.parent == raw for p in written)
    assert all(re.fullmatch(r"[0-9a-f]{64}\.(body|json)", p.name) for p in written)


def test_second_fetch_is_conditional_and_serves_cached_bytes(mirror, tmp_path):
    with fast_fetcher() as fetcher:
        first = fetcher.get(mirror.url(AVG), tmp_path)
    mtime = first.path.stat().st_mtime_ns
    mirror.clear_log()
    with fast_fetcher() as fetcher:  # a new process would start like this: only the disk cache
        second = fetcher.get(mirror.url(AVG), tmp_path)
    assert second.ok and second.from_cache and second.status == 304
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    (page,) = mirror.log_for(AVG)
    assert page.conditional and page.status == 304


def test_changed_page_is_downloaded_again(mirror_factory, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    page = site / "page.html"
    page.write_bytes(b"one")
    server = mirror_factory(site)
    raw = tmp_path / "raw"
    with fast_fetcher() as fetcher:
        assert fetcher.get(server.url("page.html"), raw).read_bytes() == b"one"
    page.write_bytes(b"two, longer")
    os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 10**9))
    with fast_fetcher() as fetcher:
        result = fetcher.get(server.url("page.html"), raw)
    assert result.status == 200 and not result.from_cache and result.read_bytes() == b"two, longer"


def test_500_twice_then_success_is_retried(mirror, tmp_path):
    mirror.fail(AVG, status=500, times=2)
    with fast_fetcher() as fetcher:
        result = fetcher.get(mirror.url(AVG), tmp_path)
        assert fetcher.stats["retries"] == 2
    assert result.ok and result.status == 200
    assert [r.status for r in mirror.log_for(AVG)] == [500, 500, 200]


def test_retry_after_is_honoured(mirror, tmp_path):
    mirror.fail(AVG, status=429, times=1, Retry_After="1")
    with fast_fetcher() as fetcher:
        assert fetcher.get(mirror.url(AVG), tmp_path).ok
    first, second = mirror.log_for(AVG)
    assert first.status == 429 and second.status == 200
    # backoff alone would wait 0.01 s; the server asked for 1 s
    assert second.at - first.at >= 0.9


def test_retries_exhausted_gives_reason_not_exception(mirror, tmp_path):
    mirror.fail(AVG, status=503, times=-1)
    with fast_fetcher(retries=2) as fetcher:
        result = fetcher.get(mirror.url(AVG), tmp_path)
    assert not result.ok and result.status == 503
    assert "503" in result.reason and "2 retries" in result.reason
    assert len(mirror.log_for(AVG)) == 3


def test_404_is_not_retried(mirror, tmp_path):
    with fast_fetcher() as fetcher:
        result = fetcher.get(mirror.url("paulgraham/progbot.html"), tmp_path)
    assert not result.ok and result.status == 404 and "404" in result.reason
    assert len(mirror.log_for("paulgraham/progbot.html")) == 1


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with fast_fetcher(retries=2, respect_robots=False) as fetcher:
        result = fetcher.get(f"http://127.0.0.1:{port}/x.html", tmp_path)
        assert fetcher.stats["requests"] == 3
    assert not result.ok and result.status is None and "ConnectionError" in result.reason


def test_same_host_redirect_followed_off_host_refused(mirror, mirror_factory, tmp_path):
    other = mirror_factory()  # another port is another host
    mirror.redirect("paulgraham/old.html", "/paulgraham/avg.html")
    mirror.redirect("paulgraham/away.html", other.url(AVG))
    with fast_fetcher() as fetcher:
        moved = fetcher.get(mirror.url("paulgraham/old.html"), tmp_path)
        away = fetcher.get(mirror.url("paulgraham/away.html"), tmp_path)
    assert moved.ok and moved.url == mirror.url(AVG)
    assert not away.ok and "off host" in away.reason
    assert other.requests() == []


def test_robots_txt_is_honoured(mirror_factory, tmp_path):
    site = tmp_path / "site"
    (site / "private").mkdir(parents=True)
    (site / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    (site / "private" / "secret.html").write_text("no")
    (site / "public.html").write_text("yes")
    server = mirror_factory(site)
    with fast_fetcher() as fetcher:
        assert fetcher.get(server.url("public.html"), tmp_path / "raw").ok
        blocked = fetcher.get(server.url("private/secret.html"), tmp_path / "raw")
    assert not blocked.ok and "robots.txt" in blocked.reason
    assert server.log_for("private/secret.html") == []


def test_unreachable_robots_txt_disallows_host(mirror, tmp_path):
    mirror.fail("robots.txt", status=500, times=-1)
    with fast_fetcher(retries=1) as fetcher:
        result = fetcher.get(mirror.url(AVG), tmp_path)
    assert not result.ok and "robots.txt unreachable" in result.reason
    assert mirror.log_for(AVG) == []


def test_rate_limit_spaces_requests_per_host(mirror, tmp_path):
    with Fetcher(rate_limit=5.0) as fetcher:
        for name in ("avg", "spam", "hw"):
            assert fetcher.get(mirror.url(f"paulgraham/{name}.html"), tmp_path).ok
    times = [r.at for r in mirror.requests()]  # robots.txt + 3 pages
    assert len(times) == 4
    assert all(b - a >= 0.18 for a, b in zip(times, times[1:], strict=False))


def test_file_urls_read_local_tree_in_place(corpora_dir, tmp_path):
    with fast_fetcher() as fetcher:
        found = fetcher.get((corpora_dir / AVG).as_uri(), tmp_path)
        missing = fetcher.get((corpora_dir / "paulgraham/progbot.html").as_uri(), tmp_path)
    assert found.ok and found.path == corpora_dir / AVG
    assert not missing.ok and missing.status == 404
    assert list(tmp_path.iterdir()) == []


def test_body_cut_off_mid_download_is_a_reason_not_a_traceback(tmp_path):
    """A server that promises 1000 bytes and hangs up after 10: no exception, no cache file."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class CutOff(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"<html>cut")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CutOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
        with fast_fetcher(respect_robots=False) as fetcher:
            result = fetcher.get(url, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert not result.ok and result.path is None
    assert result.reason.startswith("download interrupted")
    assert not any(p.is_file() and not p.name.endswith(".json") for p in tmp_path.rglob("*"))


# -- bounds on a response: deadline, size caps (issue 15, defects 7 and 8) ------------------


def head(*headers: str, status: str = "200 OK") -> bytes:
    """An HTTP/1.1 status line and headers, ready to send."""
    return "".join(f"{line}\r\n" for line in (f"HTTP/1.1 {status}", *headers, "")).encode()


class RawServer:
    """A bare HTTP server on 127.0.0.1, a thread per connection: it reads one request, then
    `respond(conn, stop)` writes whatever it likes (a drip, a bomb, a stream without end)
    until it returns, the client hangs up, or close() sets `stop`. `respond` may be a dict
    of such functions by request path (other paths: 404)."""

    def __init__(self, respond):
        self.respond = respond
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.requests: list[bytes] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                self.requests.append(request)
                respond = self.respond
                if isinstance(respond, dict):
                    path = request.split(b" ", 2)[1].decode().split("?")[0]
                    respond = respond.get(path, NOT_FOUND)
                respond(conn, self.stop)
            except OSError:  # the client hung up: what a fetcher past its bounds does
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=10)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def drip(first: bytes, every: float = 0.5, byte: bytes = b"x"):
    """Send `first`, then one byte every `every` seconds, for as long as anyone listens."""

    def respond(conn, stop):
        conn.sendall(first)
        while not stop.wait(every):
            conn.sendall(byte)

    return respond


def send(data: bytes):
    def respond(conn, stop):
        conn.sendall(data)

    return respond


NOT_FOUND = send(head("Content-Length: 0", status="404 Not Found"))


def endless(first: bytes, chunked: bool = False):
    """`first`, then 64 KiB after 64 KiB (as HTTP chunks if `chunked`), as fast as the
    client reads."""

    def respond(conn, stop):
        conn.sendall(first)
        block = b"a" * (1 << 16)
        if chunked:
            block = b"%x\r\n%s\r\n" % (len(block), block)
        while not stop.is_set():
            conn.sendall(block)

    return respond


def gzip_of_zeros(size: int) -> bytes:
    """A gzip body of `size` zero bytes: about a thousandth of that on the wire."""
    z, block = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    parts = [z.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + z.flush()


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("framing", ["Content-Length: 1000", "Connection: close"])
def test_a_dripping_body_ends_at_the_deadline(tmp_path, framing):
    """Headers at once, then a byte every 0.5 s: each read is well inside requests'
    timeout, so only an overall deadline ends it (this hung forever before)."""
    with (
        RawServer(drip(head(framing))) as server,
        fast_fetcher(deadline=2, respect_robots=False) as fetcher,
    ):
        start = time.monotonic()
        result = fetcher.get(server.url + "page.html", tmp_path)
        elapsed = time.monotonic() - start
        assert fetcher.stats["deadline_exceeded"] == 1
    assert not result.ok and result.status == 200
    got = re.fullmatch(r"deadline 2 s exceeded after (\d+) bytes", result.reason)
    assert got and 1 <= int(got[1]) <= 5, result.reason
    assert 1.9 <= elapsed < 4
    assert len(server.requests) == 1  # a dripping server is not asked again
    assert files_under(tmp_path) == []


@pytest.mark.timeout(30)
def test_dripping_headers_end_at_the_deadline(tmp_path):
    """The status line, or the headers after it, a byte at a time: cut while requests
    waits for the headers."""
    status = b"HTTP/1.1 200 OK\r\n"
    with (
        RawServer(drip(b"", every=0.2, byte=b"H")) as slow_status,
        RawServer(drip(status, every=0.2, byte=b"X")) as slow_headers,
        fast_fetcher(deadline=1.5, respect_robots=False) as fetcher,
    ):
        for server in (slow_status, slow_headers):
            start = time.monotonic()
            result = fetcher.get(server.url + "page.html", tmp_path)
            assert time.monotonic() - start < 3.5
            assert not result.ok and result.path is None
            assert result.reason == "deadline 1.5 s exceeded after 0 bytes"
            assert len(server.requests) == 1


@pytest.mark.timeout(60)
def test_a_deadline_applies_to_each_request_not_to_the_fetcher(mirror, tmp_path):
    """Fast pages keep coming after a slow one, and the watchdog of a finished request
    never cuts a later one on the same keep-alive connection."""
    with fast_fetcher(deadline=0.5) as fetcher:
        for name in ("avg", "spam", "hw"):
            assert fetcher.get(mirror.url(f"paulgraham/{name}.html"), tmp_path).ok
            time.sleep(0.3)  # past where the previous request's deadline would fall
        assert fetcher.get(mirror.url("paulgraham/avg.html"), tmp_path).from_cache
    assert fetcher.stats["deadline_exceeded"] == 0


def test_bounds_have_sane_defaults_and_refuse_nonsense():
    with Fetcher() as fetcher:
        assert fetcher.deadline == 60
        assert (fetcher.max_wire_bytes, fetcher.max_body_bytes) == (20_000_000, 100_000_000)
    for bad in ({"deadline": 0}, {"deadline": float("nan")}, {"max_wire_bytes": 0},
                {"max_body_bytes": -1}, {"max_body_bytes": 1.5}):  # fmt: skip
        with pytest.raises(IngestError, match=next(iter(bad))):
            Fetcher(**bad)


@pytest.mark.timeout(60)
def test_a_gzip_bomb_stops_at_the_inflated_cap_in_bounded_memory(tmp_path):
    """256 MB of zeros sent as 0.25 MB of gzip: refused once 8 MB are inflated, nothing
    kept, and the fetching process (its own, so its peak RSS is the fetch's) grows by far
    less than the bomb (inflating it whole in memory would take 256 MB)."""
    bomb = gzip_of_zeros(256 << 20)
    assert len(bomb) < 300_000
    served = {
        "/small": send(head("Content-Length: 2") + b"ok"),
        "/bomb": send(head("Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb),
    }
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from scrapers.fetch import Fetcher\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "url, raw = sys.argv[1], Path(sys.argv[2])\n"
        "with Fetcher(rate_limit=None, respect_robots=False, max_body_bytes=8_000_000) as f:\n"
        "    assert f.get(url + 'small', raw).ok  # every module and buffer in place\n"
        "    before = peak()\n"
        "    r = f.get(url + 'bomb', raw)\n"
        "print(json.dumps({'ok': r.ok, 'reason': r.reason, 'grew': peak() - before}))\n"
    )
    with RawServer(served) as server:
        out = subprocess.run(
            [sys.executable, "-c", code, server.url, str(tmp_path)],
            capture_output=True, text=True, cwd=REPO, timeout=50,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert not got["ok"]
    assert re.fullmatch(
        r"body over 8 MB once inflated \(max_body_bytes\); stopped after \d+ bytes received",
        got["reason"],
    ), got["reason"]
    assert got["grew"] < 32 << 20, f"peak RSS grew by {got['grew'] >> 20} MiB"
    assert [p.read_bytes() for p in files_under(tmp_path) if p.suffix == ".body"] == [b"ok"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "response, reason",
    [
        (send(head("Content-Length: 3000000") + b"a" * 3_000_000),
         r"Content-Length 3 MB is over the 1 MB cap \(max_wire_bytes\)"),
        (endless(head("Connection: close")),
         r"body over 1 MB on the wire \(max_wire_bytes\); stopped after \d+ bytes"),
        (endless(head("Transfer-Encoding: chunked"), chunked=True),
         r"body over 1 MB on the wire \(max_wire_bytes\); stopped after \d+ bytes"),
    ],
    ids=["content-length", "until-close", "chunked"],
)  # fmt: skip
def test_a_body_too_large_on_the_wire_is_a_skip(tmp_path, response, reason):
    with (
        RawServer(response) as server,
        fast_fetcher(respect_robots=False, max_wire_bytes=1_000_000, retries=0) as fetcher,
    ):
        result = fetcher.get(server.url + "big.html", tmp_path)
    assert not result.ok and re.fullmatch(reason, result.reason), result.reason
    assert files_under(tmp_path) == []


@pytest.mark.timeout(30)
def test_an_endless_fast_stream_under_the_caps_ends_at_the_deadline(tmp_path):
    with (
        RawServer(endless(head("Connection: close"))) as server,
        fast_fetcher(respect_robots=False, deadline=1, max_wire_bytes=1 << 40,
                     max_body_bytes=1 << 40) as fetcher,
    ):  # fmt: skip
        start = time.monotonic()
        result = fetcher.get(server.url + "endless.html", tmp_path)
    assert time.monotonic() - start < 3
    assert not result.ok and re.fullmatch(r"deadline 1 s exceeded after \d+ bytes", result.reason)
    assert files_under(tmp_path) == []


@pytest.mark.timeout(30)
def test_compressed_bodies_are_stored_inflated(tmp_path):
    """The fetcher inflates bodies itself (in bounded pieces): gzip (one member or several),
    deflate with and without its zlib header; an encoding it did not ask for is a skip."""
    text = b"<html>" + b"essay text " * 20_000 + b"</html>"  # inflates past one 64 KiB piece
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    bodies = {
        "/gzip": ("gzip", gzip.compress(text)),
        "/members": ("gzip", gzip.compress(text[:1000]) + gzip.compress(text[1000:])),
        "/deflate": ("deflate", zlib.compress(text)),
        "/raw-deflate": ("deflate", raw_deflate.compress(text) + raw_deflate.flush()),
        "/plain": ("identity", text),
        "/br": ("br", b"\x0b\x02\x80hello\x03"),
    }

    served = {
        path: send(head(f"Content-Encoding: {encoding}", f"Content-Length: {len(body)}") + body)
        for path, (encoding, body) in bodies.items()
    }
    with RawServer(served) as server, fast_fetcher(respect_robots=False) as fetcher:
        results = {path: fetcher.get(server.url + path[1:], tmp_path) for path in bodies}
    for path in ("/gzip", "/members", "/deflate", "/raw-deflate", "/plain"):
        assert results[path].read_bytes() == text, path
    assert not results["/br"].ok and results["/br"].reason == "unsupported Content-Encoding 'br'"
    assert all(b"accept-encoding: gzip, deflate\r\n" in r.lower() for r in server.requests)


# -- a local source stays in its folder (issue 15, defect 9) --------------------------------


def test_a_file_source_stays_in_its_folder(tmp_path):
    """Links that leave the index page's folder, by ../, an absolute path or a symlink
    inside the folder pointing out of it, are off the site; before, any .html on the disk
    was fetched."""
    site, outside = tmp_path / "site", tmp_path / "outside"
    (site / "sub").mkdir(parents=True)
    outside.mkdir()
    (site / "avg.html").write_text("in")
    (site / "sub" / "deeper.html").write_text("in, deeper")
    (outside / "secret.html").write_text("SECRET")
    (site / "escape.html").symlink_to(outside / "secret.html")
    (site / "sub" / "in-link.html").symlink_to(site / "avg.html")  # stays inside: fine
    (site / "gone").symlink_to(outside, target_is_directory=True)
    lines = [
        "avg.html", "sub/deeper.html", "sub/../avg.html#x", "sub/in-link.html",
        "../outside/secret.html", (outside / "secret.html").as_uri(), "escape.html",
        "gone/secret.html", "sub/../../outside/secret.html",
    ]  # fmt: skip
    (site / "index.txt").write_text("\n".join(lines))
    index_url = (site / "index.txt").as_uri()
    with fast_fetcher() as fetcher:
        ctx = GatherContext("t", "", None, tmp_path / "raw", fetcher, {}, log=lambda _: None)
        links = lambda body: [(href, None) for href in body.decode().split()]  # noqa: E731
        index = read_index(ctx, index_url, "test index", links)
        pages = list(fetch_pages(ctx, {url: {} for url in index.pages}))
    assert list(index.pages) == [
        (site / name).as_uri() for name in ("avg.html", "sub/deeper.html", "sub/in-link.html")
    ]
    assert [p.path.read_text() for p in pages] == ["in", "in, deeper", "in"]
    assert {s.source for s in index.offsite} == {
        (outside / "secret.html").as_uri(),
        (site / "escape.html").as_uri(),
        (site / "gone/secret.html").as_uri(),
    }
    # The rule itself: inside the folder of the page the link is on, symlinks resolved.
    assert same_host((site / "sub" / "deeper.html").as_uri(), index_url)
    assert not same_host((site / "escape.html").as_uri(), index_url)
    assert not same_host(index_url, (site / "sub" / "deeper.html").as_uri())
    assert not same_host("http://127.0.0.1/avg.html", index_url)
