"""The polite fetcher against a real loopback HTTP server (tests/mirror_fixtures.py)."""

from __future__ import annotations

import json
import os
import re
import socket
from urllib.parse import urlsplit

import pytest

from scrapers.errors import IngestError
from scrapers.fetch import Fetcher, cache_key, host_of, normalize_url
from scrapers.index_pages import fetch_pages, read_index
from scrapers.registry import GatherContext, RawItem, Skipped

AVG = "paulgraham/avg.html"


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
