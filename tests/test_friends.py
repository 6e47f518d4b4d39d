"""friends: the transcripts of ../shared/corpora/friends, fetched over loopback HTTP.

Line-level expectations on episodes marked up in different ways, then corpus-wide checks
that no markup, entity or mis-decoded byte is left.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from cleaners.friends_html import clean_episode, parse_episode, speaker_name
from scrapers.fetch import Fetcher
from scrapers.friends import episode_of
from scrapers.ingest import ingest
from scrapers.registry import get_corpus
from scrapers.store import CORPUS_FILE, DOCUMENTS_FILE
from tests.mirror_fixtures import CORPORA, start_mirror

FRIENDS = CORPORA / "friends"


def read_corpus(path: Path) -> tuple[str, list[dict]]:
    corpus = (path / CORPUS_FILE).read_text(encoding="utf-8")
    docs = [json.loads(x) for x in (path / DOCUMENTS_FILE).read_text("utf-8").splitlines()]
    return corpus, docs


@pytest.fixture(scope="module")
def friends(tmp_path_factory) -> dict:
    """The whole corpus, ingested once through a loopback mirror."""
    data = tmp_path_factory.mktemp("data")
    with start_mirror(CORPORA) as mirror, Fetcher(rate_limit=None) as fetcher:
        source = mirror.url(get_corpus("friends").mirror_path)
        result = ingest("friends", source, data_dir=data, fetcher=fetcher, progress=False)
        requested = [r.path for r in mirror.requests()]
    corpus, docs = read_corpus(result.path)
    episodes = {d["episode"]: corpus[d["char_start"] : d["char_end"]].split("\n") for d in docs}
    return {
        "manifest": result.manifest,
        "docs": docs,
        "corpus": corpus,
        "episodes": episodes,
        "meta": {d["episode"]: d for d in docs},
        "requested": requested,
    }


def index_hrefs() -> list[str]:
    html = (FRIENDS / "index.html").read_text(encoding="latin-1")
    return list(dict.fromkeys(re.findall(r'href="(season/[^"]+\.html)"', html)))


def test_follows_the_index_in_order_and_skips_missing_pages(friends):
    hrefs = index_hrefs()
    present = [h for h in hrefs if (FRIENDS / h).is_file()]
    missing = [h for h in hrefs if not (FRIENDS / h).is_file()]
    assert missing, "the fixture holds back some episodes"
    assert [d["episode"] for d in friends["docs"]] == [episode_of(h)[0] for h in present]
    skipped = {
        s["source"].split("/friends/", 1)[1]: s["reason"] for s in friends["manifest"]["skipped"]
    }
    assert skipped == {h: "HTTP 404 Not Found" for h in missing}
    pages = [p for p in friends["requested"] if p != "/robots.txt"]
    assert pages == ["/friends/index.html"] + [f"/friends/{h}" for h in hrefs]
    assert friends["manifest"]["fetched"] == len(present)


def test_bold_speakers_misnested_tags_and_strong(friends):
    lines = friends["episodes"]["0101"]
    assert lines[0] == "The One Where Monica Gets a New Roommate (The Pilot-The Uncut Version)"
    assert lines[2:6] == [
        "[Scene: Central Perk, Chandler, Joey, Phoebe, and Monica are there.]",
        "Monica: There's nothing to tell! He's just some guy I work with!",
        "Joey: C'mon, you're going out with the guy! There's gotta be something wrong with him!",
        "Chandler: All right Joey, be nice. So does he have a hump? A hump and a hairpiece?",
    ]
    assert "(They all stare, bemused.)" in lines  # a stage direction on its own
    assert "All: Oh, yeah. Had that dream." in lines  # <strong>
    assert "Ross: (mortified) Hi." in lines
    assert "Customer: (To Rachel) Ahh, miss? More coffee?" in lines  # &nbsp;&nbsp; inside
    at = lines.index("Monica: Maybe.")  # two bold speakers in one <p>
    assert lines[at + 1] == "Joey: Wait. Your 'not a real date' tonight is with Paul the Wine Guy?"


def test_colon_after_the_bold_name(friends):
    lines = friends["episodes"]["0404"]
    assert "Mr. Treeger: Hey." in lines  # <b>Mr. Treeger:</b>: Hey.
    lines = friends["episodes"]["0608"]  # Ralph Lauren:</b>: Hi Kim. (no opening <b>)
    assert "Ralph Lauren: Hi Kim. (Dead silence until Ralph gets off the elevator.)" in lines
    lines = friends["episodes"]["0403"]  # <strong>Chandler</strong>: ... &#146;
    assert lines[3] == "Chandler: Oh no-no-no, I’m, I’m paddling away!"
    assert "Monica: (Entering from her bedroom) How desperate am I?" in lines


def test_upper_case_names_without_tags_and_br_only_pages(friends):
    lines = friends["episodes"]["0204"]
    assert lines[0] == "The One With Phoebe's Husband"
    assert lines[1] == "[Scene: Monica and Rachel's apartment. Rachel is on the phone.]"
    assert lines[2].startswith("Rachel: Mom, would you relax. That was 10 blocks from here")
    assert lines[2].endswith("It's open you guys.")  # one utterance over five source lines
    assert lines[3:6] == [
        "[a stranger enters with flowers]",
        "Stranger: Hi.",
        "Rachel: Hi, hi can I help you?",
    ]
    assert "Opening Titles" in lines
    assert not any(re.match(r"[A-Z]{2,}[ A-Z]*:", x) for x in lines)
    # Season 2 codes: the four-letter names, and those an episode defines, e.g. "(FBOB)".
    assert friends["episodes"]["0208"][2:4] == [
        "Rachel: Ross kissed me.",
        "Monica: Oh my god, oh my god, oh my god!",
    ]
    assert any(x.startswith("Fun Bobby: Geller!") for x in friends["episodes"]["0210"])


def test_numeric_references_are_windows_1252(friends):
    lines = friends["episodes"]["0815"]  # <b><p>Phoebe: </b>Oh!  and &#146;
    assert lines[2:4] == ["Phoebe: Oh! Hey, Rach!", "Rachel: Hi! Hey, Happy Valentine’s Day!"]
    assert "Pete: Hmm, come on, you just said to her that you…." in friends["episodes"]["0318"]
    assert friends["episodes"]["0403"][0] == "The One With The ‘Cuffs"
    # raw windows-1252 bytes: 0xE9 and 0x92
    assert any("André should be there" in x for x in friends["episodes"]["0122"])
    assert "Steve: (sobbing) I - I can't believe I’m crying in front of you." in " ".join(
        friends["episodes"]["0914"]
    )


def test_hard_wrapped_utterances_are_one_line(friends):
    laura = (
        "Laura: You know, I... I feel like I've been here before. "
        "Are any other couples in the building adopting?"
    )
    assert laura in friends["episodes"]["1007"]
    tulsa = friends["episodes"]["0910"]
    assert tulsa[0] == "The One With Christmas In Tulsa"  # <h1>Friends<br/>The One ...</h1>
    assert tulsa[2].startswith(
        "Phoebe: ...sprang to his sleigh, to his team gave a whistle; and away"
    )
    assert friends["meta"]["0910"]["aired"] == "12/12/2002"


def test_crlf_pages(friends):
    assert (FRIENDS / "season/0811.html").read_bytes().count(b"\r\n") > 100
    lines = friends["episodes"]["0811"]
    assert lines[0] == "The One With Ross’ Big Step Forward"
    assert lines[2:4] == ["Rachel: Phoebe?", "Phoebe: Yeah?"]


def test_credits_move_to_metadata(friends):
    assert friends["meta"]["0101"]["credits"] == [
        {"role": "Written by", "name": "Marta Kauffman & David Crane"},
        {"role": "Transcribed by", "name": "guineapig"},
        {"role": "Additional transcribing by", "name": "Eric Aasen"},
    ]
    assert {"role": "Final check by", "name": "Kim"} in friends["meta"]["1006"]["credits"]
    credited = [d for d in friends["docs"] if any("ranscri" in c["role"] for c in d["credits"])]
    assert len(credited) > 0.9 * len(friends["docs"])
    for lines in friends["episodes"].values():
        for line in lines:
            assert not re.match(r"(.{0,30}\b)?(Written|Transcribed|Teleplay|Story) by\b", line), (
                line
            )


CREDIT_LINE = re.compile(
    r"^[^:\[({]{0,80}\b(?:by|from)\s*:|\b(?:written|transcribed|teleplay|story|directed|produced|"
    r"adjustments|additions|htmled)\s+by\b|^(?:dedicated to|special thanks)\b",
    re.IGNORECASE,
)


def head_of(lines: list[str]) -> list[str]:
    """The lines of a script before its first scene, stage direction or utterance."""
    head = []
    for line in lines[1:]:
        if line[:1] in "[(" or re.match(r"^[^:]{1,40}: ", line):
            break
        head.append(line)
    return head


def test_no_credit_block_left_at_the_head_of_any_script(friends):
    """Credits in any wording ("With Scenes Taken From Episodes Transcribed by: …",
    "Dutch Phrases by: …", "Russian to Roman alphabet: …", dedications) go to metadata."""
    for episode, lines in friends["episodes"].items():
        for line in head_of(lines):
            assert not CREDIT_LINE.search(line), (episode, line)
        for line in lines:
            assert not re.search(r"\b(?:written|transcribed|teleplay) by\b", line, re.I), line
    credits = {e: [c["role"] for c in m["credits"]] for e, m in friends["meta"].items()}
    assert "With Scenes Taken From Episodes Transcribed by" in credits["0620"]
    assert credits["0906"][-2:] == ["Russian to Roman alphabet", "Dedicated to"]
    assert "Dutch Phrases by" in credits["0807"]
    # a description at the head is the script's, not a credit
    assert head_of(friends["episodes"]["07outtakes"])[0].startswith("This is a special out takes")


def test_no_markup_entities_or_mojibake_left(friends):
    corpus = friends["corpus"]
    assert not re.search(r"<[a-zA-Z/!][^>]*>", corpus)
    assert not re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+\d*);", corpus, re.IGNORECASE)
    for bad in ("\ufffd", "â€", "Ã©", "Ã", "\xa0", "\r", "\xad", "  "):
        assert bad not in corpus, repr(bad)
    assert not re.search(r"[\x80-\x9f]", corpus)  # C1 controls: cp1252 read as Latin-1
    assert unicodedata.normalize("NFC", corpus) == corpus
    for doc in friends["docs"]:
        lines = friends["episodes"][doc["episode"]]
        assert lines[0] == doc["title"]  # every script starts with its title
        assert all(x == x.strip() and x for x in lines)


def test_local_clone_gives_the_same_documents(friends, tmp_path):
    with Fetcher(rate_limit=None) as fetcher:
        result = ingest(
            "friends", str(FRIENDS), limit=12, data_dir=tmp_path, fetcher=fetcher, progress=False
        )
    _, docs = read_corpus(result.path)
    assert [d["sha256"] for d in docs] == [d["sha256"] for d in friends["docs"][:12]]
    assert docs[0]["source"] == (FRIENDS / "season/0101.html").resolve().as_uri()


def test_markup_variants_give_the_same_line():
    pages = [
        "<p><b>Monica:</b> Hi there.</p>",
        "<p><b>Monica</b>: Hi there.</p>",
        "<p><strong>Monica:</strong> Hi there.</p>",
        "<b><p>Monica: </b>Hi&nbsp;&nbsp; there.</p>",
        "MONICA: Hi\r\nthere.<br>",
        "<font size=3><b>Monica</b></font><font color=blue>:</font> Hi there.",
    ]
    for page in pages:
        episode = parse_episode("<h1>T</h1>\n[Scene: X]<br>\n" + page)
        assert episode.lines == ["[Scene: X]", "Monica: Hi there."], page


def test_two_bold_speakers_in_one_paragraph():
    page = "<h1>T</h1><p><b>Monica:</b> Maybe. <b>Joey:</b> Wait.</p>"
    assert parse_episode(page).lines == ["Monica: Maybe.", "Joey: Wait."]
    page = "<h1>T</h1><p><b>Chandler and </b><b>Joey:</b> Hey!</p>"
    assert parse_episode(page).lines == ["Chandler and Joey: Hey!"]


def test_utterances_separated_only_by_br():
    page = "<p>ROSS: Hi.<br>\nRACHEL: Hey.<br>\n(They hug.)<br><br>MRS. GELLER: Ross!</p>"
    assert parse_episode("<h1>T</h1><p>[Scene: Y]</p>" + page).lines == [
        "[Scene: Y]",
        "Ross: Hi.",
        "Rachel: Hey. (They hug.)",
        "Mrs. Geller: Ross!",
    ]


def test_title_credits_and_bytes():
    page = (
        b"<title>x</title><h1>905 - The One With The Thing</h1>"
        b"<p>Written by: A &amp; B<br>Transcribed by: C</p>"
        b"<p>[Scene: Caf\xe9]</p><p><b>Joey:</b> It\x92s &#146;fine&#146;&#133;</p>"
    )
    episode = clean_episode(page)
    assert episode.title == "The One With The Thing"
    assert episode.credits == [("Written by", "A & B"), ("Transcribed by", "C")]
    assert episode.text == "The One With The Thing\n[Scene: Café]\nJoey: It’s ’fine’…"


CREDIT_WORDINGS = {
    "Written by: A & B": ("Written by", "A & B"),
    "Story by C": ("Story by", "C"),
    "Teleplay: D": ("Teleplay", "D"),
    "With Scenes Taken From Episodes Transcribed by: E, F, and Me.": (
        "With Scenes Taken From Episodes Transcribed by",
        "E, F, and Me.",
    ),
    "Dutch Phrases by: Kenny": ("Dutch Phrases by", "Kenny"),
    "Spell-checked and formatted by G": ("Spell-checked and formatted by", "G"),
    "Transcriber: H": ("Transcriber", "H"),
    "Dedicated to the memory of I": ("Dedicated to", "the memory of I"),
    "Special thanks to J and K": ("Special thanks to", "J and K"),
}


@pytest.mark.parametrize("line", CREDIT_WORDINGS)
def test_credits_in_any_wording_at_the_head(line):
    page = (
        f"<h1>The One With The Test</h1><p>Written by: Z<br>{line}</p><hr>"
        "<p>[Scene: Central Perk.]</p><p><b>Ross:</b> Hi. Written by hand, this.</p>"
    )
    episode = parse_episode(page)
    assert episode.credits == [("Written by", "Z"), CREDIT_WORDINGS[line]]
    assert episode.lines == ["[Scene: Central Perk.]", "Ross: Hi. Written by hand, this."]


def test_credit_words_in_the_script_stay_script():
    """Past the head, only a plain credit ("Transcribed by X") is taken out: a speaker
    named like a role, or a line with "by" in it, is the script's."""
    page = (
        "<h1>T</h1><p>[Scene: A set.]</p><p>Director: Cut! Thanks to you, we're late.</p>"
        "<p>Dedicated to the People of New York City</p><p>Transcribed by: Q</p>"
    )
    episode = parse_episode(page)
    assert episode.lines == [
        "[Scene: A set.]",
        "Director: Cut! Thanks to you, we're late.",
        "Dedicated to the People of New York City",  # the show's own end card
    ]
    assert episode.credits == [("Transcribed by", "Q")]


ENTITIES = {
    "&ndash;": "–",
    "&amp;ndash;": "–",
    "&amp;amp;ndash;": "–",
    "&#146;": "’",
    "&amp;#146;": "’",
    "&amp;#x2014;": "—",
    "&amp;eacute;": "é",
    "S&amp;M": "S&M",
    "M&amp;Ms": "M&Ms",
    "&amp;": "&",
    "&lt;laughs&gt;": "(laughs)",
    "&amp;lt;laughs&amp;gt;": "(laughs)",
    "a&#1;b\x02c&#xfeff;d": "abcd",
}


@pytest.mark.parametrize("entity", ENTITIES)
def test_entities_escaped_once_or_twice(entity):
    page = f"<h1>T</h1><p>[Scene: X]</p><p><b>Joey:</b> 1{entity}2</p>"
    assert parse_episode(page).lines[-1] == f"Joey: 1{ENTITIES[entity]}2"


def test_speaker_names():
    assert speaker_name("MONICA") == "Monica"
    assert speaker_name("MRS. GELLER") == "Mrs. Geller"
    assert speaker_name("CHANDLER and JOEY") == "Chandler and Joey"
    assert speaker_name("PHOE/MNCA") == "Phoebe/Monica"
    assert speaker_name("FBOB", {"FBOB": "Fun Bobby"}) == "Fun Bobby"
    assert speaker_name("Dr. Green") == "Dr. Green"
    assert speaker_name("C.H.E.E.S.E.") == "C.H.E.E.S.E."
