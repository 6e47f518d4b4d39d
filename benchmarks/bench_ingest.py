"""Ingest of the 216-page Paul Graham mirror over loopback HTTP (rate limit off).

Each measurement runs in a fresh process (so peak RSS is that run's own): a first run into
an empty data dir, then a re-run that finds every page in the raw cache (304s) and the
corpus unchanged. Baselines, measured in the same run against the same server: plain
`requests.get` of the same pages (no robots, cache, cleaning or writing) for speed, and a
process that only imports the ingest code for memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIRROR = REPO.parent / "shared" / "corpora"

CHILD = """
import json, resource, sys, time
from pathlib import Path
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
start = time.perf_counter()
result = ingest("paulgraham", sys.argv[1], data_dir=Path(sys.argv[2]),
                fetcher=Fetcher(rate_limit=None), progress=False)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "documents": result.manifest["documents"],
                  "unchanged": result.unchanged,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
IMPORT_ONLY = """
import json, resource
import scrapers.ingest, scrapers.paulgraham
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
PLAIN_GET = """
import json, sys, time, requests
urls = sys.argv[1:]
start = time.perf_counter()
with requests.Session() as s:
    for url in urls:
        s.get(url, timeout=30).content
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def child(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    from scrapers.mirror import serve_mirror

    pages = sorted(p.name for p in (MIRROR / "paulgraham").glob("*.html"))
    with serve_mirror(MIRROR) as base, tempfile.TemporaryDirectory() as data:
        index = base + "paulgraham/articles.html"
        plain = child(PLAIN_GET, *(base + f"paulgraham/{p}" for p in pages))
        first = child(CHILD, index, data)
        again = child(CHILD, index, data)
        imports = child(IMPORT_ONLY)
    assert again["unchanged"], "the re-run should find the corpus unchanged"
    plain_rate = len(pages) / plain["seconds"]
    first_rate = len(pages) / first["seconds"]
    again_rate = len(pages) / again["seconds"]
    docs = first["documents"]
    return [
        {
            "name": f"ingest paulgraham, first run ({len(pages)} pages, {docs} essays)",
            "value": first_rate,
            "unit": "pages/s",
            "baseline": plain_rate,
            "ratio": first_rate / plain_rate,
            "note": "baseline: plain requests.get of the same pages, nothing else",
        },
        {
            "name": "ingest paulgraham, cached re-run (conditional GETs, 304)",
            "value": again_rate,
            "unit": "pages/s",
            "baseline": first_rate,
            "ratio": again_rate / first_rate,
            "target": "> 1 (faster than the first run)",
        },
        {
            "name": "peak RSS, first run",
            "value": first["rss_mb"],
            "unit": "MB",
            "baseline": imports["rss_mb"],
            "ratio": first["rss_mb"] / imports["rss_mb"],
            "note": "baseline: a process that only imports the ingest code",
        },
        {
            "name": "peak RSS, cached re-run",
            "value": again["rss_mb"],
            "unit": "MB",
            "baseline": imports["rss_mb"],
            "ratio": again["rss_mb"] / imports["rss_mb"],
        },
        {"name": "first run wall time", "value": first["seconds"], "unit": "s"},
        {"name": "cached re-run wall time", "value": again["seconds"], "unit": "s"},
    ]


if __name__ == "__main__":
    start = time.perf_counter()
    for row in run():
        print(row)
    print(f"({time.perf_counter() - start:.0f} s)")
