"""The other corpora: Go concatenation against `cat`, Chinese gather, Friends clean.

- Go: the kubernetes-go corpus's own gather + clean over a large real tree (Debian's
  golang-1.19-src, ~120 MB, of which the default rules take the non-test, non-generated,
  non-testdata .go files), written as one stream, against `cat` over exactly the files it
  took, in the same run (best of 3 each, warm page cache). Target: >= 0.5x cat.
  Then the full `ingest` (store, hashes, vocabulary, documents.jsonl) in a fresh process
  for its throughput and peak RSS. Target: < 200 MB however large the tree.
- Chinese: the sanguo fixture (1.2 MB GBK) cleaned in process, and ingested over loopback
  HTTP, in MB/s of input; baseline a bare strict GBK decode.
- Friends: the 219 episode pages cleaned, in MB/s of HTML; baseline BeautifulSoup's
  get_text() on the same pages (tags stripped, nothing else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"
# golang-1.19-src installs under /usr/share; /usr/lib/go-1.19 is where golang-1.19-go links it.
GO_TREES = (Path("/usr/lib/go-1.19/src"), Path("/usr/share/go-1.19/src"))
RSS_LIMIT_MB = 200
REPEAT = 3

INGEST_CHILD = """
import json, sys, time
from pathlib import Path
from scrapers.ingest import ingest
options = json.loads(sys.argv[3])
start = time.perf_counter()
result = ingest("kubernetes-go", sys.argv[1], data_dir=Path(sys.argv[2]), options=options,
                progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, **result.manifest}))
"""
# Everything the default rules leave out: a bigger corpus from the same tree.
EVERYTHING = {f"include_{k}": True for k in ("generated", "vendor", "third_party", "testdata")}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(*fns, repeat: int = REPEAT) -> list[float]:
    """Best time of each function, the runs interleaved so that a busy spell on a shared
    machine slows both sides of a comparison rather than one."""
    times = [[timed(fn) for fn in fns] for _ in range(repeat)]
    return [min(column) for column in zip(*times, strict=True)]


def go_tree() -> Path | None:
    return next((p for p in GO_TREES if p.is_dir()), None)


def concatenate_go(root: Path, out: Path, taken: list[str] | None = None) -> None:
    """The corpus's gather + clean over root, its documents written to out (and the files
    they came from listed in `taken`)."""
    from scrapers.fetch import Fetcher
    from scrapers.ingest import resolve_options
    from scrapers.registry import Document, GatherContext, RawItem, get_corpus
    from scrapers.store import SEPARATOR

    spec = get_corpus("kubernetes-go")
    options = resolve_options(spec, {})
    with Fetcher() as fetcher, open(out, "w", encoding="utf-8") as f:
        ctx = GatherContext(
            spec.name, str(root), None, out.parent, fetcher, options, lambda m: None
        )
        for item in spec.gather(ctx):
            if not isinstance(item, RawItem):
                continue
            for doc in spec.clean(item, options):
                if isinstance(doc, Document):
                    f.write(doc.text)
                    f.write(SEPARATOR)
                    if taken is not None:
                        taken.append(str(item.path))


def copy_in_python(files: list[str], out: Path) -> None:
    """The least any Python per-file pipeline does: open, read, write each file."""
    with open(out, "wb") as f:
        for name in files:
            with open(name, "rb", buffering=0) as src:
                f.write(src.readall())


def cat(files: list[str], out: Path) -> None:
    with open(out, "wb") as f:
        subprocess.run(
            ["xargs", "-0", "cat"], input="\0".join(files).encode(), stdout=f, check=True
        )


def ingest_in_child(root: Path, data: Path, options: dict) -> tuple[dict, float]:
    """Full ingest in a fresh process: (its result, its peak RSS in MB from wait4)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", INGEST_CHILD, str(root), str(data), json.dumps(options)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"ingest child failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def go_rows() -> list[dict]:
    root = go_tree()
    if root is None:
        note = f"no Go tree at {' or '.join(map(str, GO_TREES))}: install golang-1.19-src"
        return [{"name": "go concatenation", "value": None, "unit": "MB/s", "note": note}]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files: list[str] = []
        concatenate_go(root, tmp / "ours.txt", files)  # also warms the page cache
        size = sum(os.path.getsize(f) for f in files)
        ours, floor, base = best_of(
            lambda: concatenate_go(root, tmp / "ours.txt"),
            lambda: copy_in_python(files, tmp / "copy.txt"),
            lambda: cat(files, tmp / "cat.txt"),
            repeat=2 * REPEAT,
        )
        manifest, rss = ingest_in_child(root, tmp / "data", {})
        everything, rss_everything = ingest_in_child(root, tmp / "all", EVERYTHING)
    mb = size / 1e6
    ours_rate, cat_rate = mb / ours, mb / base
    ingest_rate = mb / manifest["seconds"]
    tree = f"{len(files)} files, {mb:.1f} MB from {root}"
    return [
        {
            "name": "go concatenation (gather+clean) vs cat",
            "value": ours_rate,
            "unit": "MB/s",
            "baseline": cat_rate,
            "ratio": ours_rate / cat_rate,
            "target": ">= 0.5",
            "note": tree,
        },
        {
            "name": "go: python open+read+write of the same files vs cat",
            "value": mb / floor,
            "unit": "MB/s",
            "baseline": cat_rate,
            "ratio": base / floor,
            "note": "the floor for any per-file Python pipeline (no walk, no cleaning)",
        },
        {
            "name": "go full ingest (store, hashes, vocab) vs cat",
            "value": ingest_rate,
            "unit": "MB/s",
            "baseline": cat_rate,
            "ratio": ingest_rate / cat_rate,
            "note": f"{manifest['documents']} documents, {len(manifest['skipped'])} skipped",
        },
        {
            "name": "go full ingest peak RSS",
            "value": rss,
            "unit": "MB",
            "target": f"< {RSS_LIMIT_MB}",
            "note": f"whole child process, from wait4; corpus {manifest['bytes'] / 1e6:.0f} MB",
        },
        {
            "name": "go full ingest peak RSS, everything included",
            "value": rss_everything,
            "unit": "MB",
            "baseline": rss,
            "ratio": rss_everything / rss,
            "target": f"< {RSS_LIMIT_MB}",
            "note": f"generated, vendor, testdata too: corpus {everything['bytes'] / 1e6:.0f} MB",
        },
    ]


def chinese_rows() -> list[dict]:
    from cleaners.chinese import decode_chinese, split_novel
    from scrapers.fetch import Fetcher
    from scrapers.ingest import ingest
    from scrapers.mirror import serve_mirror
    from scrapers.registry import get_corpus

    data = (CORPORA / "sanguo" / "三国演义.txt").read_bytes()
    mb = len(data) / 1e6
    clean, decode = best_of(
        lambda: split_novel(decode_chinese(data).text), lambda: data.decode("gbk")
    )

    def over_http() -> None:
        with tempfile.TemporaryDirectory() as tmp, Fetcher(rate_limit=None) as fetcher:
            url = base + get_corpus("sanguo").mirror_path
            ingest("sanguo", url, data_dir=Path(tmp), fetcher=fetcher, progress=False)

    with serve_mirror(CORPORA) as base:
        (gather,) = best_of(over_http)
    return [
        {
            "name": "chinese clean (detect+decode+paragraphs+chapters)",
            "value": mb / clean,
            "unit": "MB/s",
            "baseline": mb / decode,
            "ratio": decode / clean,
            "note": f"sanguo fixture, {mb:.2f} MB GBK; baseline: bytes.decode('gbk')",
        },
        {
            "name": "chinese gather (ingest sanguo over loopback HTTP)",
            "value": mb / gather,
            "unit": "MB/s",
            "note": "fetch + clean + write corpus, fresh data dir each time",
        },
    ]


def friends_rows() -> list[dict]:
    from bs4 import BeautifulSoup

    from cleaners.friends_html import clean_episode

    pages = [p.read_bytes() for p in sorted((CORPORA / "friends" / "season").glob("*.html"))]
    mb = sum(map(len, pages)) / 1e6
    ours, soup = best_of(
        lambda: [clean_episode(p) for p in pages],
        lambda: [BeautifulSoup(p, "html.parser").get_text() for p in pages],
    )
    return [
        {
            "name": "friends clean (episode pages -> scripts)",
            "value": mb / ours,
            "unit": "MB/s",
            "baseline": mb / soup,
            "ratio": soup / ours,
            "note": f"{len(pages)} pages, {mb:.1f} MB; baseline: BeautifulSoup get_text()",
        }
    ]


def run() -> list[dict]:
    return go_rows() + chinese_rows() + friends_rows()


if __name__ == "__main__":
    for row in run():
        print(row)
