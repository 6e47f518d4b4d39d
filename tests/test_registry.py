"""The corpus registry, option handling and the `charflow corpora` / `charflow ingest` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from scrapers import registry
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import gather_raw, ingest, resolve_options
from scrapers.registry import (
    CorpusSpec,
    Document,
    RawItem,
    Skipped,
    get_corpus,
    list_corpora,
    register,
)

REPO = Path(__file__).resolve().parent.parent


def charflow(*args, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_builtin_corpora_are_discovered():
    names = [spec.name for spec in list_corpora()]
    assert "paulgraham" in names and names == sorted(names)
    spec = get_corpus("paulgraham")
    assert spec.mirror_path == "paulgraham/articles.html"
    assert spec.default_source.startswith("http://paulgraham.com/")


def test_unknown_corpus_names_the_known_ones():
    with pytest.raises(IngestError, match=r"unknown corpus 'nope'.*paulgraham"):
        get_corpus("nope")


def test_bad_corpus_name_is_rejected():
    spec = CorpusSpec("no spaces", "x", "", gather=lambda ctx: iter(()), clean=lambda i, o: [])
    with pytest.raises(IngestError, match="no spaces"):
        register(spec)


def toy_spec(name="toy-options", **options) -> CorpusSpec:
    def gather(ctx):
        yield RawItem(ctx.source, Path(ctx.source), {})

    def clean(item, opts):
        text = item.path.read_text()
        yield Document(text.upper() if opts.get("shout") else text, item.source)

    return CorpusSpec(name, "toy", "", gather, clean, options=options)


def test_options_are_typed_from_defaults(monkeypatch):
    spec = toy_spec(shout=False, repeat=1, ratio=0.5, label="x")
    opts = resolve_options(spec, {"shout": "yes", "repeat": "3", "ratio": "2", "label": "y"})
    assert opts == {"shout": True, "repeat": 3, "ratio": 2.0, "label": "y"}
    assert resolve_options(spec, None) == {"shout": False, "repeat": 1, "ratio": 0.5, "label": "x"}
    with pytest.raises(IngestError, match="unknown option.*'loud'.*shout"):
        resolve_options(spec, {"loud": "1"})
    with pytest.raises(IngestError, match="repeat='many': expected a int"):
        resolve_options(spec, {"repeat": "many"})


def test_ingest_applies_options_and_limit(monkeypatch, tmp_path):
    spec = toy_spec(shout=False)
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    source = tmp_path / "in.txt"
    source.write_text("quiet words")
    result = ingest(spec.name, str(source), data_dir=tmp_path / "data", options={"shout": "on"})
    assert (result.path / "corpus.txt").read_text() == "QUIET WORDS"
    assert result.manifest["options"] == {"shout": True}
    with pytest.raises(IngestError, match="limit must be >= 1"):
        ingest(spec.name, str(source), data_dir=tmp_path / "data", limit=0)


def test_gathering_ahead_stops_after_max_raw_and_closes_the_gatherer(tmp_path):
    pulled, closed = [], []

    def gather(ctx):
        try:
            for n in range(5):
                pulled.append(n)
                yield Skipped(f"s{n}", "HTTP 404") if n == 1 else RawItem(f"u{n}", tmp_path, {})
        finally:
            closed.append(True)

    spec = CorpusSpec("toy-gather", "toy", "", gather, lambda item, opts: [])
    with Fetcher() as fetcher:
        items = list(gather_raw(spec, "src", tmp_path, fetcher, {}, max_raw=2, log=lambda _: None))
    assert [i.source for i in items] == ["u0", "s1", "u2"]
    assert pulled == [0, 1, 2] and closed == [True]  # nothing was fetched past the cap


def test_nothing_fetched_or_cleaned_is_one_error_and_keeps_the_corpus(monkeypatch, tmp_path):
    spec = toy_spec()
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    source, data = tmp_path / "in.txt", tmp_path / "data"
    source.write_text("words")
    corpus = ingest(spec.name, str(source), data_dir=data).path / "corpus.txt"

    only_skips = lambda ctx: iter([Skipped("a.html", "HTTP 404")])  # noqa: E731
    monkeypatch.setitem(registry._REGISTRY, spec.name, replace(spec, gather=only_skips))
    nothing = r"^nothing fetched from .*\(1 skipped, e.g. a.html: HTTP 404\)$"
    with pytest.raises(IngestError, match=nothing):
        ingest(spec.name, str(source), data_dir=data)

    no_text = lambda item, opts: [Skipped(item.source, "no text on the page")]  # noqa: E731
    monkeypatch.setitem(registry._REGISTRY, spec.name, replace(spec, clean=no_text))
    with pytest.raises(IngestError, match=r"^no documents from .*: no text on the page\)$"):
        ingest(spec.name, str(source), data_dir=data)
    assert corpus.read_text() == "words"


def test_cli_lists_corpora_with_sources():
    out = charflow("corpora")
    assert out.returncode == 0, out.stderr
    assert "paulgraham" in out.stdout and "http://paulgraham.com/articles.html" in out.stdout


def test_cli_errors_are_one_line(tmp_path):
    out = charflow("ingest", "nope", "--data-dir", str(tmp_path))
    error = out.stderr.strip()
    assert out.returncode == 1 and len(error.splitlines()) == 1
    assert error.startswith("charflow: error: unknown corpus 'nope'")
    out = charflow("ingest", "paulgraham", "--option", "novalue", "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "KEY=VALUE" in out.stderr
    assert not (tmp_path / "paulgraham").exists()


def test_cli_ingest_writes_under_charflow_home_by_default(tmp_path, corpora_dir):
    index = corpora_dir / "paulgraham" / "articles.html"
    out = charflow(
        "ingest", "paulgraham", "--source", str(index), "--limit", "1",
        env={"CHARFLOW_HOME": str(tmp_path / "home")}, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "home" / "data" / "paulgraham" / "corpus.txt").is_file()
    assert not (tmp_path / "data").exists()  # not the working directory's data/


def test_corpus_from_an_installed_package_is_picked_up(tmp_path):
    """A corpus defined outside the project: a package with a `charflow.corpora` entry
    point, installed as a dist-info on the path of a fresh `charflow` process."""
    site = tmp_path / "site"
    package = site / "tinytexts"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            """A corpus living outside charflow: lines of a local text file."""
            from pathlib import Path

            from scrapers.registry import CorpusSpec, Document, RawItem


            def gather(ctx):
                yield RawItem(ctx.source, Path(ctx.source), {})


            def clean(item, options):
                for number, line in enumerate(item.path.read_text().splitlines()):
                    yield Document(line, f"{item.source}#{number}")


            SPEC = CorpusSpec(
                name="tinytexts",
                description="one document per line of a text file",
                default_source="lines.txt",
                gather=gather,
                clean=clean,
            )
            '''
        )
    )
    dist = site / "tinytexts-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinytexts\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[charflow.corpora]\ntinytexts = tinytexts:SPEC\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    listed = charflow("corpora", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "tinytexts" in listed.stdout and "one document per line" in listed.stdout
    assert "paulgraham" in listed.stdout  # built-ins are still there

    (tmp_path / "lines.txt").write_text("alpha\nbeta\ngamma\n")
    data = tmp_path / "data"
    ingested = charflow("ingest", "tinytexts", "--data-dir", str(data), env=env, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    manifest = json.loads((data / "tinytexts" / "manifest.json").read_text())
    assert manifest["documents"] == 3 and manifest["name"] == "tinytexts"

    # Without the package on the path the corpus is unknown: the test above is not vacuous.
    assert "tinytexts" not in charflow("corpora").stdout
