"""A symbol corpus's alphabet (from its manifest.json), rallies decoded into words and read
back, and the symbols by name (corpus/shots.json). Used by training/symbols.py's report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data import corpus_manifest

ARROW = " → "  # between the steps of a rally
AT = " @ "  # a shot and where it landed
CUT = "…"  # a rally the sample's length (or a stray separator) broke off
SHOT, AREA, END = "shot", "area", "end"


# -- the alphabet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alphabet:
    """A manifest's symbols: names, kinds and (with `player=`) whose stroke each one is."""

    entries: dict[str, dict]  # symbol -> {zh, en, count, kind, player?}, manifest order
    end: str

    @classmethod
    def from_manifest(cls, manifest: dict | None) -> Alphabet | None:
        """None unless the manifest declares an alphabet and its end symbol."""
        if not manifest or not manifest.get("alphabet") or not manifest.get("end_symbol"):
            return None
        entries, end = dict(manifest["alphabet"]), manifest["end_symbol"]
        if end not in entries:
            raise ValueError(f"the end symbol {end!r} is not in the declared alphabet")
        return cls(entries, end)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.entries

    def kind(self, symbol: str) -> str:
        # A corpus that declares no kinds has shots and its end symbol only.
        return END if symbol == self.end else self.entries[symbol].get("kind", SHOT)

    def is_event(self, symbol: str) -> bool:
        """A shot or the rally end: what a stroke is counted by ("nats per stroke")."""
        return self.kind(symbol) in (SHOT, END)

    @property
    def player(self) -> str | None:
        """The modelled player's name (the corpus was built with `player=`), else None."""
        for entry in self.entries.values():
            if entry.get("player") not in (None, "opponent"):
                return entry["player"]
        return None

    def side(self, symbol: str) -> str | None:
        """'Player' or 'Opponent' for a shot of a one-player corpus, else None."""
        if self.player is None or self.kind(symbol) != SHOT:
            return None
        return "Opponent" if self.entries[symbol].get("player") == "opponent" else "Player"

    def label(self, symbol: str) -> str:
        """'發短球 (short service)': the data's name, then the English one."""
        entry = self.entries[symbol]
        zh, en = entry.get("zh"), entry.get("en")
        if zh and en and zh != en:
            return f"{zh} ({en})"
        return zh or en or symbol

    def english(self, symbol: str) -> str:
        entry = self.entries[symbol]
        return entry.get("en") or entry.get("zh") or symbol

    def axis_label(self, symbol: str, *, chinese: bool) -> str:
        """A heat-map tick: English (and Chinese when a font can draw it), side marked."""
        name = self.english(symbol)
        if chinese and self.entries[symbol].get("zh"):
            name = f"{name} {self.entries[symbol]['zh']}"
        side = self.side(symbol)
        return f"{'P' if side == 'Player' else 'O'}: {name}" if side else name


def symbol_alphabet(source) -> Alphabet | None:
    """The alphabet a corpus folder declares, or None (plain text, or no alphabet)."""
    return Alphabet.from_manifest(corpus_manifest(source))


# -- rallies in words -----------------------------------------------------------------------


def rallies_of(text: str, alphabet: Alphabet) -> list[str]:
    """The alphabet's symbols of `text`, one string per rally: a rally ends after the end
    symbol, or where a character outside the alphabet (the corpus separator) breaks in
    before it. Separator characters between rallies are dropped."""
    rallies, current = [], []
    for ch in text:
        if ch in alphabet:
            current.append(ch)
            if ch == alphabet.end:
                rallies.append("".join(current))
                current = []
        elif current:  # a separator inside a rally: show the rally as broken off
            rallies.append("".join(current))
            current = []
    if current:
        rallies.append("".join(current))
    return rallies


def rally_in_words(symbols: str, alphabet: Alphabet) -> str:
    """'Server: 發短球 (short service) → Receiver: 推球 (push) → … → 回合結束 (rally end)'.

    Who plays a stroke: with `player=` the symbol's case says it (Player / Opponent);
    otherwise strokes alternate from the rally's first, the serve (Server / Receiver).
    A landing area follows its shot after " @ "; one with no shot before it stands alone
    in brackets (a sample can produce that). A rally without its end symbol ends in "…".
    """
    steps: list[str] = []
    strokes, open_shot = 0, False  # open_shot: the last step is a shot without its area
    for symbol in symbols:
        kind = alphabet.kind(symbol)
        if kind == AREA and open_shot:
            steps[-1] += AT + alphabet.english(symbol)
            open_shot = False
        elif kind == AREA:
            steps.append(f"[{alphabet.english(symbol)}]")
        elif kind == END:
            steps.append(alphabet.label(symbol))
            open_shot = False
        else:
            role = alphabet.side(symbol) or ("Server" if strokes % 2 == 0 else "Receiver")
            steps.append(f"{role}: {alphabet.label(symbol)}")
            strokes, open_shot = strokes + 1, True
    if not symbols.endswith(alphabet.end):
        steps.append(CUT)
    return ARROW.join(steps)


def rally_from_words(line: str, alphabet: Alphabet) -> str:
    """The symbols of a rally written by rally_in_words (its inverse)."""
    shots, areas = _word_tables(alphabet)
    out = []
    for step in line.split(ARROW):
        if step == CUT:
            continue
        if step.startswith("[") and step.endswith("]"):
            out.append(_look_up(areas, step[1:-1], line))
            continue
        shot, _, area = step.partition(AT)
        role, colon, name = shot.partition(": ")
        if not colon:  # the rally end has no role
            role, name = "", shot
        side = role if role in ("Player", "Opponent") else None
        out.append(_look_up(shots, (name, side), line))
        if area:
            out.append(_look_up(areas, area, line))
    return "".join(out)


def _word_tables(alphabet: Alphabet) -> tuple[dict, dict]:
    shots = {(alphabet.label(s), alphabet.side(s)): s for s in alphabet.entries if s}
    areas = {alphabet.english(s): s for s in alphabet.entries if alphabet.kind(s) == AREA}
    return shots, areas


def _look_up(table: dict, key, line: str) -> str:
    if key not in table:
        raise ValueError(f"{key!r} names no symbol of the alphabet (in {line!r})")
    return table[key]


def sample_in_words(text: str, alphabet: Alphabet, name: str) -> str:
    """A sample as one rally a line, under a header saying how to read it."""
    rallies = rallies_of(text, alphabet)
    cut = sum(not r.endswith(alphabet.end) for r in rallies)
    who = (
        f"Player is {alphabet.player}, Opponent whoever they played"
        if alphabet.player
        else "Server and Receiver alternate from each rally's first stroke"
    )
    header = [
        f"# {name} in words: {len(rallies)} rallies, one a line; the symbols are in {name}.",
        f"# {who}. Shot names: the data's (Chinese), then English.",
        f"# {cut} of them end in {CUT}, cut off by the sample's length or a stray separator.",
    ]
    return "\n".join(header + [rally_in_words(r, alphabet) for r in rallies]) + "\n"


def sample_from_words(text: str, alphabet: Alphabet) -> str:
    """The symbols of a file written by sample_in_words, rallies joined."""
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    return "".join(rally_from_words(x, alphabet) for x in lines)


# -- shots by name --------------------------------------------------------------------------


def shots_table(alphabet: Alphabet, vocab: list[str], train_ids: np.ndarray) -> dict[str, list]:
    """corpus/shots.json: each declared symbol by name, with its count in the corpus (from
    the manifest) and in the training split, most frequent first within each kind."""
    train_counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=len(vocab))
    index = {ch: i for i, ch in enumerate(vocab)}
    kind_totals: dict[str, int] = {}
    for s, e in alphabet.entries.items():
        kind_totals[alphabet.kind(s)] = kind_totals.get(alphabet.kind(s), 0) + e.get("count", 0)
    order = {SHOT: 0, AREA: 1, END: 2}
    symbols = sorted(
        alphabet.entries,
        key=lambda s: (order.get(alphabet.kind(s), 3), -alphabet.entries[s].get("count", 0)),
    )
    rows = []
    for s in symbols:
        entry, kind = alphabet.entries[s], alphabet.kind(s)
        count = entry.get("count", 0)
        rows.append(
            {
                "symbol": s,
                "zh": entry.get("zh", ""),
                "en": entry.get("en", ""),
                "kind": kind,
                "side": alphabet.side(s) or "",
                "count": count,
                "share_of_kind": count / kind_totals[kind] if kind_totals[kind] else 0.0,
                "train_count": int(train_counts[index[s]]) if s in index else 0,
            }
        )
    return {key: [r[key] for r in rows] for key in rows[0]}
