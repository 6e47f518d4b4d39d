"""cleaners/encoding.py: web bytes of unknown encoding -> NFC text, no mojibake, no U+FFFD."""

from __future__ import annotations

import random
import unicodedata

import pytest

from cleaners.encoding import decode_bytes, is_utf8

MOJIBAKE = ("â€", "Ã©", "Ã¶", "\ufffd")


def test_ascii_and_valid_utf8_are_unchanged():
    text = "plain ASCII, café, 三国演义, Gödel, emoji 😀, “quotes” — dash"
    assert decode_bytes(text.encode("utf-8")) == text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x93quoted\x94", "“quoted”"),
        (b"it\x92s", "it’s"),
        (b"blind \x97 that", "blind — that"),
        (b"startup\x96idea", "startup–idea"),
        (b"caf\xe9", "café"),
        (b"G\xf6del", "Gödel"),
        (b"\x80100", "€100"),
    ],
)
def test_windows_1252_bytes_become_their_characters(raw, expected):
    assert decode_bytes(raw) == expected


def test_mixed_page_decodes_both_parts():
    # A cp1252 page later edited in a UTF-8 editor: both halves must come out right.
    raw = "café — “UTF-8” 中文 ".encode() + b"and caf\xe9 \x97 \x93cp1252\x94 na\xefve"
    assert decode_bytes(raw) == "café — “UTF-8” 中文 and café — “cp1252” naïve"


def test_cp1252_byte_followed_by_continuation_byte():
    # 0xE9 0x97 looks like the start of a 3-byte UTF-8 sequence but is "é—" in cp1252.
    assert decode_bytes(b"\xe9\x97A") == "é—A"


def test_undefined_cp1252_bytes_are_dropped():
    assert decode_bytes(b"a\x81b\x8dc\x8fd\x90e\x9df") == "abcdef"


def test_bom_is_removed():
    assert decode_bytes(b"\xef\xbb\xbfhello") == "hello"
    assert decode_bytes("hi 中".encode("utf-16")) == "hi 中"


def test_output_is_nfc():
    decomposed = "Go\u0308del e\u0301"
    assert decode_bytes(decomposed.encode()) == "Gödel é"
    assert unicodedata.is_normalized("NFC", decode_bytes(decomposed.encode()))


def test_random_bytes_never_give_replacement_characters():
    rng = random.Random(4)
    for _ in range(500):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        text = decode_bytes(raw)
        assert "\ufffd" not in text
        assert unicodedata.is_normalized("NFC", text)
        assert not any(0x80 <= ord(c) <= 0x9F for c in text)  # no C1 controls


def test_real_pages_decode_cleanly(corpora_dir):
    pages = sorted((corpora_dir / "paulgraham").glob("*.html"))
    not_utf8 = [p for p in pages if not is_utf8(p.read_bytes())]
    assert len(not_utf8) == 19  # README: 19 pages carry single cp1252/Latin-1 bytes
    for page in pages:
        text = decode_bytes(page.read_bytes())
        assert not any(m in text for m in MOJIBAKE), page.name
    orth = decode_bytes((corpora_dir / "paulgraham/orth.html").read_bytes())
    assert "privilege makes you blind — that you can't see" in " ".join(orth.split())
    hw = decode_bytes((corpora_dir / "paulgraham/hw.html").read_bytes())
    assert "“" in hw and "”" in hw


def test_c1_controls_from_double_encoding_get_cp1252_meaning():
    # cp1252 0x93/0x94/0x97 read as Latin-1 and saved as UTF-8 arrive as U+0093 etc.
    assert decode_bytes("\u0093hi\u0094 \u0097 x\u0081y".encode()) == "“hi” — xy"
