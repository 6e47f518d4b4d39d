"""Hostile sites against a real ingest over loopback (issue 15, defects 7-9): every page ends
within its deadline or at a size cap, as a skip the manifest records, and the corpus on disk
stays byte-identical (or absent) when an ingest fails or is interrupted.

A kill -9 in the middle of an ingest is tests/test_paulgraham.py::
test_sigkill_mid_ingest_leaves_previous_corpus_intact (not repeated here).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import pytest

from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from scrapers.store import STAGING_PREFIX
from tests.test_fetch import RawServer, drip, endless, gzip_of_zeros, head, send

pytestmark = pytest.mark.timeout(180)

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
DEADLINE = 1.5
CORPUS_FILES = ("corpus.txt", "documents.jsonl", "manifest.json")

# page -> the reason its skip must give
HOSTILE = {
    "/drip.html": rf"deadline {DEADLINE:g} s exceeded after \d+ bytes",
    "/slow-headers.html": rf"deadline {DEADLINE:g} s exceeded after 0 bytes",
    "/endless.html": r"body over 1 MB on the wire \(max_wire_bytes\); stopped after \d+ bytes",
    "/endless-chunked.html": r"body over 1 MB on the wire \(max_wire_bytes\); .*",
    "/huge.html": r"Content-Length 50 MB is over the 1 MB cap \(max_wire_bytes\)",
    "/bomb.html": r"body over 4 MB once inflated \(max_body_bytes\); .*",
}


def index_page(pages) -> bytes:
    """An essay index as paulgraham's articles.html lays it out: one link per table cell."""
    cells = "".join(f'<tr><td><a href="{p.lstrip("/")}">{p}</a></td></tr>' for p in pages)
    return f"<html><body><table>{cells}</table></body></html>".encode()


def page(body: bytes):
    return send(head("Content-Type: text/html", f"Content-Length: {len(body)}") + body)


@pytest.fixture(scope="module")
def site():
    """One loopback site: a good essay, the hostile pages, and three indexes (good only,
    good and hostile, hostile only)."""
    bomb = gzip_of_zeros(64 << 20)
    good = (CORPORA / "paulgraham" / "avg.html").read_bytes()
    routes = {
        "/avg.html": page(good),
        "/drip.html": drip(head("Content-Length: 100000"), every=0.3),
        "/slow-headers.html": drip(b"HTTP/1.1 200 OK\r\n", every=0.2, byte=b"X"),
        "/endless.html": endless(head("Connection: close")),
        "/endless-chunked.html": endless(head("Transfer-Encoding: chunked"), chunked=True),
        "/huge.html": drip(head("Content-Length: 50000000")),  # the body never comes
        "/bomb.html": send(head("Content-Encoding: gzip", f"Content-Length: {len(bomb)}") + bomb),
        "/good.html": page(index_page(["/avg.html"])),
        "/mixed.html": page(index_page(["/avg.html", *HOSTILE])),
        "/hostile.html": page(index_page(list(HOSTILE))),
    }
    with RawServer(routes) as server:
        yield server


def bounded_fetcher(**kwargs) -> Fetcher:
    return Fetcher(
        rate_limit=None, backoff=0.01, deadline=DEADLINE, max_wire_bytes=1_000_000,
        max_body_bytes=4_000_000, **kwargs,
    )  # fmt: skip


def snapshot(corpus_dir: Path) -> dict:
    return {n: ((corpus_dir / n).read_bytes(), (corpus_dir / n).stat().st_mtime_ns)
            for n in CORPUS_FILES if (corpus_dir / n).exists()}  # fmt: skip


def test_hostile_pages_end_within_their_deadline_as_recorded_skips(site, tmp_path):
    start = time.monotonic()
    with bounded_fetcher() as fetcher:
        result = ingest("paulgraham", site.url + "mixed.html", data_dir=tmp_path, fetcher=fetcher)
    elapsed = time.monotonic() - start
    # two pages run to their deadline; the rest stop at a cap at once
    assert elapsed < 2 * DEADLINE + 15, f"ingest took {elapsed:.1f} s"
    manifest = result.manifest
    assert manifest["documents"] == 1
    assert "Franz Developer Symposium" in (result.path / "corpus.txt").read_text()
    reasons = {s["source"].removeprefix(site.url.rstrip("/")): s["reason"]
               for s in manifest["skipped"]}  # fmt: skip
    assert set(reasons) == set(HOSTILE)
    for path, reason in HOSTILE.items():
        assert re.fullmatch(reason, reasons[path]), (path, reasons[path])
    # nothing half-downloaded in the cache: only the index and the essay, whole
    raw = sorted(p.name for p in (result.path / "raw").iterdir())
    assert len(raw) == 4 and all(re.fullmatch(r"[0-9a-f]{64}\.(body|json)", n) for n in raw)
    assert sum(p.stat().st_size for p in (result.path / "raw").iterdir()) < 1_000_000


def test_a_failed_ingest_leaves_no_corpus_or_the_previous_one_byte_identical(site, tmp_path):
    corpus_dir = tmp_path / "paulgraham"
    # No corpus yet: a site of hostile pages only fails and writes none.
    with bounded_fetcher() as fetcher, pytest.raises(IngestError, match="nothing fetched"):
        ingest("paulgraham", site.url + "hostile.html", data_dir=tmp_path, fetcher=fetcher)
    assert snapshot(corpus_dir) == {}
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))

    with bounded_fetcher() as fetcher:
        ingest("paulgraham", site.url + "good.html", data_dir=tmp_path, fetcher=fetcher)
    before = snapshot(corpus_dir)
    assert set(before) == set(CORPUS_FILES)

    # The same hostile site over a corpus: the corpus stays as it was, byte for byte.
    with bounded_fetcher() as fetcher, pytest.raises(IngestError, match="nothing fetched"):
        ingest("paulgraham", site.url + "hostile.html", data_dir=tmp_path, fetcher=fetcher)
    assert snapshot(corpus_dir) == before

    # Ctrl-C (a real SIGINT) while the ingest is stuck reading the dripping page, after the
    # good essay was read.
    def interrupt_at_the_drip() -> None:
        end = time.monotonic() + 60
        while not any(b"GET /drip.html" in r for r in site.requests):
            if time.monotonic() > end:
                return
            time.sleep(0.02)
        time.sleep(DEADLINE / 3)  # inside the drip, well before its deadline
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    site.requests.clear()
    interrupter = threading.Thread(target=interrupt_at_the_drip, daemon=True)
    interrupter.start()
    with bounded_fetcher() as fetcher, pytest.raises(KeyboardInterrupt):
        ingest("paulgraham", site.url + "mixed.html", data_dir=tmp_path, fetcher=fetcher)
        time.sleep(30)  # (not reached: the ingest is interrupted first)
    interrupter.join()
    assert any(b"GET /avg.html" in r for r in site.requests)
    assert snapshot(corpus_dir) == before
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))
