"""ShuttleSet (badminton, stroke by stroke) -> rallies as strings of shot symbols.

Pure functions over the bytes of the dataset's CSV files: `set/match.csv` (one row per
match) and `set/<video>/set<N>.csv` (one row per stroke). Columns are found by name (in any
order, any letter case, with stray spaces), numbers may be written `1` or `1.0`, and short
rows (empty trailing fields) read as empty. Anything the symbols cannot be made from raises
ShuttleSetError with one line naming the file and the value.

A rally becomes one string: one symbol per stroke (two with landing areas), then END.

    shot symbols   a letter per shot type (SHOTS); upper case, or, when one player is
                   modelled, upper case for that player's strokes and lower case for the
                   opponent's
    area symbols   landing area n (1-16) is chr(ord("0") + n): "1".."9" then ":;<=>?@";
                   "0" is a stroke without a recorded landing area
    END            "." after the last stroke: the rally end is a symbol of its own, so a
                   model predicts it like any shot and every rally (the corpus's last one
                   too) is closed by the same single character
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

# The dataset README's translation table, in its order, plus the unknown shot type that the
# data uses but the table lacks. Letters are mnemonic where the English name allows.
SHOTS: tuple[tuple[str, str, str], ...] = (
    ("N", "放小球", "net shot"),
    ("R", "擋小球", "return net"),
    ("S", "殺球", "smash"),
    ("W", "點扣", "wrist smash"),
    ("L", "挑球", "lob"),
    ("O", "防守回挑", "defensive return lob"),
    ("C", "長球", "clear"),
    ("D", "平球", "drive"),
    ("F", "小平球", "driven flight"),
    ("B", "後場抽平球", "back-court drive"),
    ("P", "切球", "drop"),
    ("Q", "過渡切球", "passive drop"),
    ("U", "推球", "push"),
    ("H", "撲球", "rush"),
    ("E", "防守回抽", "defensive return drive"),
    ("X", "勾球", "cross-court net shot"),
    ("T", "發短球", "short service"),
    ("G", "發長球", "long service"),
    ("K", "未知球種", "unknown"),
)
# Other spellings of a shot in the data -> the table's name (the data writes 過度 for 過渡).
SHOT_ALIASES = {"過度切球": "過渡切球"}
SYMBOL_OF_SHOT = {zh: symbol for symbol, zh, _ in SHOTS}
END = "."
MAX_AREA = 16  # landing areas 1-16 in ShuttleSet's court grid
NO_AREA = 0
DETAILS = ("shot", "shot+area")
SIDES = ("A", "B")  # A: the match winner, B: the loser (the dataset's convention)

MATCH_COLUMNS = ("video", "set", "winner", "loser")
MATCH_DETAILS = ("tournament", "round", "year", "month", "day")  # kept when present
STROKE_COLUMNS = ("rally", "player", "type", "roundscore_A", "roundscore_B")
# Who won the rally and why: metadata, so a release without them still gives symbols.
RALLY_DETAILS = ("getpoint_player", "lose_reason", "win_reason")
AREA_COLUMN = "landing_area"


class ShuttleSetError(Exception):
    """A file the corpus cannot be built from. Deliberately not a ValueError: a caller
    that records unreadable items as skipped must not turn bad data into a quiet skip."""


@dataclass(frozen=True)
class Match:
    video: str  # the folder name under set/, verbatim (spaces and all)
    sets: int
    winner: str  # player A
    loser: str  # player B
    tournament: str | None = None
    round: str | None = None
    date: str | None = None  # YYYY-MM-DD when year, month and day are given

    @property
    def players(self) -> dict[str, str]:
        return {"A": self.winner, "B": self.loser}


@dataclass(frozen=True)
class Stroke:
    side: str  # "A" or "B"
    shot: str  # the table's Chinese name (aliases resolved)
    area: int  # landing area 1-16, NO_AREA when not recorded (0 when areas were not read)


@dataclass(frozen=True)
class Rally:
    number: int
    strokes: tuple[Stroke, ...]
    score: tuple[int, int]  # A, B after the rally
    winner: str | None  # "A", "B" or None (not recorded and not inferable)
    winner_from: str | None  # "getpoint_player", or "score" when inferred from the score
    lose_reason: str | None
    win_reason: str | None


# -- reading CSV --------------------------------------------------------------------------


def read_table(data: bytes, name: str) -> pd.DataFrame:
    """The CSV as text cells ("" for empty), column names stripped."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,  # "NA" or "null" in a name stays text
            index_col=False,  # a trailing comma on every row must not shift the columns
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShuttleSetError(f"{name}: not a readable CSV file ({first})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.fillna("")  # short rows leave their trailing cells missing


def _columns(frame: pd.DataFrame, wanted: Iterable[str], name: str) -> dict[str, pd.Series]:
    by_name = {c.casefold(): c for c in frame.columns}
    found = {}
    for column in wanted:
        actual = by_name.get(column.casefold())
        if actual is None:
            raise ShuttleSetError(f"{name}: missing column {column!r}")
        found[column] = frame[actual]
    return found


def parse_int(value: str, name: str, column: str, row: int) -> int:
    """'7', '7.0', ' 7 ' -> 7; anything else is an error naming file, column and value."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None or not number.is_integer():
        raise ShuttleSetError(f"{name}: {column} {value!r} in row {row} is not a whole number")
    return int(number)


def canonical_shot(value: str) -> str | None:
    """The table's name for a shot type as written in the data; None if not a shot type."""
    shot = value.strip()
    shot = SHOT_ALIASES.get(shot, shot)
    return shot if shot in SYMBOL_OF_SHOT else None


# -- match.csv ----------------------------------------------------------------------------


def parse_matches(data: bytes, name: str) -> list[Match]:
    """The rows of match.csv, in file order."""
    frame = read_table(data, name)
    cols = {k: v.tolist() for k, v in _columns(frame, MATCH_COLUMNS, name).items()}
    optional = {k: _optional_column(frame, k) for k in MATCH_DETAILS}
    matches, seen = [], set()
    for i in range(len(frame)):
        row = i + 1
        video = cols["video"][i]
        # The folder name is taken verbatim (ShuttleSet has one with a space before "_"),
        # but it must stay a single folder under set/.
        if not video.strip() or video.strip() in (".", "..") or "/" in video or "\\" in video:
            raise ShuttleSetError(f"{name}: video {video!r} in row {row} is not a folder name")
        if video in seen:  # its rallies would be taken twice
            raise ShuttleSetError(f"{name}: video {video!r} is listed twice (row {row})")
        seen.add(video)
        sets = parse_int(cols["set"][i], name, "set", row)
        if sets < 1:
            raise ShuttleSetError(f"{name}: set {sets} in row {row} is not a number of sets")
        winner, loser = cols["winner"][i].strip(), cols["loser"][i].strip()
        if not winner or not loser:
            raise ShuttleSetError(f"{name}: row {row} ({video}) lacks the winner or the loser")
        matches.append(
            Match(
                video=video,
                sets=sets,
                winner=winner,
                loser=loser,
                tournament=optional["tournament"][i].strip() or None,
                round=optional["round"][i].strip() or None,
                date=_date([optional[k][i] for k in ("year", "month", "day")]),
            )
        )
    return matches


def _optional_column(frame: pd.DataFrame, column: str) -> list[str]:
    """A column's cells, or empty cells when the file lacks it (metadata, not symbols)."""
    by_name = {c.casefold(): c for c in frame.columns}
    actual = by_name.get(column.casefold())
    return frame[actual].tolist() if actual is not None else [""] * len(frame)


def _date(parts: list[str]) -> str | None:
    """'2019', '11.0', '10' -> '2019-11-10'; None unless all three are plain numbers."""
    try:
        year, month, day = (int(float(p)) for p in parts)
    except (ValueError, OverflowError):
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def player_key(name: str) -> str:
    """How player names are compared: match.csv writes 'Viktor AXELSEN' in one row and
    folders write 'Viktor_Axelsen'; case, underscores and runs of spaces do not count."""
    return " ".join(name.replace("_", " ").casefold().split())


def side_of(match: Match, player: str) -> str | None:
    """'A' or 'B' if `player` plays in the match, else None."""
    key = player_key(player)
    for side, name in match.players.items():
        if player_key(name) == key:
            return side
    return None


# -- set<N>.csv ---------------------------------------------------------------------------


def parse_set(data: bytes, name: str, *, areas: bool = False) -> list[Rally]:
    """The rallies of one set file, by rally number; strokes of a rally in file order.

    Rows of one rally need not be adjacent: ShuttleSet appends a forgotten rally at the end
    of some files under its own number, so rallies are grouped and ordered by number.
    `areas` reads landing_area (and then requires the column).
    """
    frame = read_table(data, name)
    wanted = STROKE_COLUMNS + ((AREA_COLUMN,) if areas else ())
    cols = {k: v.tolist() for k, v in _columns(frame, wanted, name).items()}
    cols |= {k: _optional_column(frame, k) for k in RALLY_DETAILS}
    by_rally: dict[int, list[int]] = {}
    strokes: list[Stroke] = []
    for i in range(len(frame)):
        row = i + 1
        number = parse_int(cols["rally"][i], name, "rally", row)
        side = cols["player"][i].strip().upper()
        if side not in SIDES:
            value = cols["player"][i]
            raise ShuttleSetError(f"{name}: player {value!r} in row {row} is not A or B")
        shot = canonical_shot(cols["type"][i])
        if shot is None:
            raise ShuttleSetError(
                f"{name}: shot type {cols['type'][i]!r} in row {row} is not in the shot table"
            )
        area = _area(cols[AREA_COLUMN][i], name, row) if areas else NO_AREA
        strokes.append(Stroke(side, shot, area))
        by_rally.setdefault(number, []).append(i)
    rallies = []
    previous: tuple[int, tuple[int, int]] = (0, (0, 0))  # rally number, score after it
    for number in sorted(by_rally):
        rows = by_rally[number]
        last = rows[-1]
        score = (
            parse_int(cols["roundscore_A"][last], name, "roundscore_A", last + 1),
            parse_int(cols["roundscore_B"][last], name, "roundscore_B", last + 1),
        )
        winner, winner_from = _rally_winner(cols, rows, name)
        if winner is None and previous[0] == number - 1:
            winner = _winner_by_score(previous[1], score)
            winner_from = "score" if winner else None
        rallies.append(
            Rally(
                number=number,
                strokes=tuple(strokes[i] for i in rows),
                score=score,
                winner=winner,
                winner_from=winner_from,
                lose_reason=_last_value(cols["lose_reason"], rows),
                win_reason=_last_value(cols["win_reason"], rows),
            )
        )
        previous = (number, score)
    return rallies


def _area(value: str, name: str, row: int) -> int:
    if not value.strip():
        return NO_AREA
    area = parse_int(value, name, "landing_area", row)
    if not 1 <= area <= MAX_AREA:
        raise ShuttleSetError(f"{name}: landing_area {value!r} in row {row} is not in 1-{MAX_AREA}")
    return area


def _last_value(column: list[str], rows: list[int]) -> str | None:
    values = [column[i].strip() for i in rows if column[i].strip()]
    return values[-1] if values else None


def _rally_winner(cols: dict, rows: list[int], name: str) -> tuple[str | None, str | None]:
    """getpoint_player of the rally (usually on its last stroke only)."""
    said = {cols["getpoint_player"][i].strip().upper() for i in rows} - {""}
    bad = said - set(SIDES)
    if bad:
        raise ShuttleSetError(f"{name}: getpoint_player {sorted(bad)[0]!r} is not A or B")
    if len(said) == 1:
        return said.pop(), "getpoint_player"
    return None, None  # not recorded, or both sides named: left to the score


def _winner_by_score(before: tuple[int, int], after: tuple[int, int]) -> str | None:
    """Scores are recorded after each rally, so the side whose score went up by one won
    it; trusted only when exactly one point changed hands since the rally before."""
    delta = (after[0] - before[0], after[1] - before[1])
    return {(1, 0): "A", (0, 1): "B"}.get(delta)


# -- symbols ------------------------------------------------------------------------------


def check_detail(detail: str) -> str:
    if detail not in DETAILS:
        raise ShuttleSetError(f"detail {detail!r} is not one of {', '.join(DETAILS)}")
    return detail


def area_symbol(area: int) -> str:
    return chr(ord("0") + area)


def rally_text(rally: Rally, *, player_side: str | None = None, detail: str = "shot") -> str:
    """The rally's symbols: per stroke its shot (then its landing area), then END.

    With `player_side` ("A" or "B"), that side's shots are upper case, the other's lower.
    """
    check_detail(detail)
    parts = []
    for stroke in rally.strokes:
        symbol = SYMBOL_OF_SHOT[stroke.shot]
        if player_side is not None and stroke.side != player_side:
            symbol = symbol.lower()
        parts.append(symbol)
        if detail == "shot+area":
            parts.append(area_symbol(stroke.area))
    parts.append(END)
    return "".join(parts)


def alphabet(texts: Iterable[str], *, player: str | None = None, detail: str = "shot") -> dict:
    """Every symbol the options can produce -> {zh, en, count, kind[, player]}, counted
    over `texts`. Symbols that never occur are listed with count 0: the alphabet is what
    the corpus declares, not only what a sample of it happens to hold."""
    check_detail(detail)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    entries: dict[str, dict] = {}

    def declare(symbol: str, zh: str, en: str, **rest) -> None:
        # {zh, en, count} first, the fields the corpus contract names, then the rest
        entries[symbol] = {"zh": zh, "en": en, "count": counts[symbol], **rest}

    for symbol, zh, en in SHOTS:
        if player:
            declare(symbol, zh, en, kind="shot", player=player)
            declare(symbol.lower(), zh, en, kind="shot", player="opponent")
        else:
            declare(symbol, zh, en, kind="shot")
    if detail == "shot+area":
        declare(area_symbol(NO_AREA), "無落點", "no landing area", kind="area")
        for area in range(1, MAX_AREA + 1):
            declare(area_symbol(area), f"落點區域{area}", f"landing area {area}", kind="area")
    declare(END, "回合結束", "rally end", kind="end")
    unknown = sorted(set(counts) - set(entries))
    if unknown:
        raise ShuttleSetError(f"symbols {unknown} are not in the alphabet of these options")
    return entries
