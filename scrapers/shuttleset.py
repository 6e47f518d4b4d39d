"""shuttleset: badminton rallies (ShuttleSet, KDD 2023) as strings of shot symbols.

One document per rally, one symbol per stroke (two with `detail=shot+area`), then "." for
the rally end; the symbols are declared in manifest.json as `alphabet` (see
cleaners/shuttleset.py and docs/shuttleset.md). Documents carry the match as
`split_group`, so the trainer keeps every rally of a held-out match out of training.

The source is a folder in ShuttleSet's layout (`set/match.csv`, `set/<video>/set<N>.csv`),
the `set/` folder, or match.csv itself: a local path or an http(s) URL. Set files are
found from match.csv (`video` names the folder, `set` the number of sets played), so the
same code reads a local tree and a web server that lists no folders.

    charflow ingest shuttleset                                     # GitHub, pinned commit
    charflow ingest shuttleset --source ../shared/corpora/shuttleset
    charflow ingest shuttleset --option player="Viktor AXELSEN"    # his strokes upper case
    charflow ingest shuttleset --option detail=shot+area           # shot, then landing area
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

from cleaners.shuttleset import (
    END,
    Match,
    ShuttleSetError,
    alphabet,
    check_detail,
    parse_matches,
    parse_set,
    player_key,
    rally_text,
    side_of,
)
from scrapers.errors import IngestError
from scrapers.fetch import FetchResult, is_url
from scrapers.registry import CorpusSpec, Document, GatherContext, RawItem, Skipped, register

REPOSITORY = "https://raw.githubusercontent.com/wywyWang/CoachAI-Projects"
COMMIT = "39bbf3fd99b0b709ff6d1647383959b6fa5f5b74"  # the commit ../shared/corpora copies
DEFAULT_SOURCE = f"{REPOSITORY}/{COMMIT}/ShuttleSet/set/match.csv"
MATCH_TABLE = "match.csv"
OPTIONS = {
    "player": "",  # a player's name: their strokes upper case, the opponent's lower case
    "detail": "shot",  # "shot" or "shot+area" (each stroke's landing area after its shot)
}


def settings(options: dict) -> tuple[str | None, str]:
    """(player or None, detail) from the corpus options; bad values are an IngestError."""
    player = str(options.get("player") or "").strip() or None
    try:
        detail = check_detail(str(options.get("detail") or "shot").strip())
    except ShuttleSetError as err:
        raise IngestError(f"option {err}") from None
    return player, detail


def display_name(url: str) -> str:
    """What an error calls a file: its local path for file URLs, else the URL, unquoted
    (folder names hold spaces)."""
    parts = urlsplit(url)
    return unquote(parts.path) if parts.scheme == "file" else unquote(url)


def match_table_candidates(source: str) -> list[str]:
    """URLs where match.csv may be for a source naming it, the set/ folder or the dataset
    folder (a web server cannot be asked which, so a folder URL gets both guesses)."""
    if not is_url(source):
        path = Path(source).expanduser().resolve()
        if path.is_file():
            return [path.as_uri()]
        for candidate in (path / "set" / MATCH_TABLE, path / MATCH_TABLE):
            if candidate.is_file():
                return [candidate.as_uri()]
        raise IngestError(f"no ShuttleSet match table at {path} (expected set/{MATCH_TABLE})")
    if urlsplit(source).path.endswith(".csv"):
        return [source]
    folder = source.rstrip("/") + "/"
    return [folder + "set/" + MATCH_TABLE, folder + MATCH_TABLE]


def set_file_url(table_url: str, video: str, number: int) -> str:
    """set/<video>/set<N>.csv next to match.csv; the folder name is quoted whole (spaces)."""
    return urljoin(table_url, f"{quote(video, safe='')}/set{number}.csv")


def _fetch_table(ctx: GatherContext) -> FetchResult:
    tried = []
    for url in match_table_candidates(ctx.source):
        got = ctx.fetcher.get(url, ctx.raw_dir)
        if got.ok:
            return got
        tried.append(f"{display_name(url)}: {got.reason}")
    raise IngestError(f"cannot read the ShuttleSet match table ({'; '.join(tried)})")


def _matches(table: FetchResult) -> list[Match]:
    try:
        matches = parse_matches(table.read_bytes(), display_name(table.url))
    except ShuttleSetError as err:
        raise IngestError(str(err)) from None
    if not matches:
        raise IngestError(f"{display_name(table.url)}: no matches listed")
    return matches


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    player, _ = settings(ctx.options)
    table = _fetch_table(ctx)
    matches = _matches(table)
    sides = {m.video: side_of(m, player) if player else None for m in matches}
    if player and not any(sides.values()):
        known = sorted({n for m in matches for n in m.players.values()}, key=player_key)
        raise IngestError(
            f"player {player!r} plays in no match of {display_name(table.url)}; "
            f"players: {', '.join(known)}"
        )
    taken = [m for m in matches if not player or sides[m.video]]
    sets = sum(m.sets for m in taken)
    ctx.log(f"ShuttleSet: {len(taken)} of {len(matches)} matches, {sets} sets")
    ctx.set_total(sets + len(matches) - len(taken))  # a skipped match is one item
    for match in matches:
        if player and not sides[match.video]:
            folder = urljoin(table.url, quote(match.video, safe="") + "/")
            yield Skipped(folder, f"{player} does not play in this match (option player)")
            continue
        for number in range(1, match.sets + 1):
            url = set_file_url(table.url, match.video, number)
            got = ctx.fetcher.get(url, ctx.raw_dir)
            if not got.ok:
                yield Skipped(url, got.reason or "not fetched")
                continue
            meta = {
                "match": match.video,
                "tournament": match.tournament,
                "round": match.round,
                "date": match.date,
                "players": match.players,
                "set": number,
                "player_side": sides[match.video],
            }
            yield RawItem(url, got.path, meta)


def clean(item: RawItem, options: dict) -> Iterator[Document | Skipped]:
    player, detail = settings(options)
    meta = item.meta
    try:
        rallies = parse_set(
            item.path.read_bytes(), display_name(item.source), areas=detail == "shot+area"
        )
    except ShuttleSetError as err:  # bad data stops the run: no corpus short of strokes
        raise IngestError(str(err)) from None
    players, side = meta["players"], meta["player_side"]
    for rally in rallies:
        text = rally_text(rally, player_side=side, detail=detail)
        yield Document(
            text=text,
            source=f"{item.source}#rally={rally.number}",
            title=f"{meta['match']} set {meta['set']} rally {rally.number}",
            date=meta["date"],
            meta={
                "match": meta["match"],
                "tournament": meta["tournament"],
                "round": meta["round"],
                "set": meta["set"],
                "rally": rally.number,
                "players": players,
                "score": {"A": rally.score[0], "B": rally.score[1]},
                "strokes": len(rally.strokes),
                "winner": rally.winner,
                "winner_name": players[rally.winner] if rally.winner else None,
                "winner_from": rally.winner_from,
                "lose_reason": rally.lose_reason,
                "win_reason": rally.win_reason,
                **({"player": players[side], "player_side": side} if player else {}),
                # strokes of one match are not independent: the trainer splits by match
                "split_group": meta["match"],
            },
        )


def manifest_fields(options: dict, documents: list[Document]) -> dict:
    """The symbol alphabet with counts over the written rallies, for manifest.json."""
    player, detail = settings(options)
    if player:  # the name as match.csv spells it, not as the option was typed
        spellings = Counter(d.meta["player"] for d in documents)
        player = spellings.most_common(1)[0][0] if spellings else player
    try:
        symbols = alphabet((d.text for d in documents), player=player, detail=detail)
    except ShuttleSetError as err:
        raise IngestError(str(err)) from None
    return {
        "alphabet": symbols,
        "end_symbol": END,
        "symbols_per_stroke": 2 if detail == "shot+area" else 1,
        "strokes": sum(d.meta["strokes"] for d in documents),
    }


SPEC = register(
    CorpusSpec(
        name="shuttleset",
        description="ShuttleSet badminton rallies, one document per rally, a symbol per stroke",
        default_source=DEFAULT_SOURCE,
        gather=gather,
        clean=clean,
        mirror_path="shuttleset/set/match.csv",
        # 44 matches split whole: 10% each keeps val and test at four or five matches.
        # The model: chosen on validation for 5-minute CPU runs (docs/shuttleset.md). The
        # corpus is ~51k chars over 20 symbols, so a small GRU learns more in 5
        # minutes than wider or deeper nets, which overfit or get too few steps; 64 chars
        # are a few rallies (14 chars with the separator on average).
        training_defaults={
            "val_fraction": 0.1,
            "test_fraction": 0.1,
            "model": "gru",
            "num_layers": 1,
            "hidden_size": 64,
            "emb_size": 32,
            "dropout": 0.1,
            "seq_len": 64,
            "batch_size": 32,
            "lr": 3e-3,
        },
        options=OPTIONS,
        manifest_fields=manifest_fields,
    )
)
