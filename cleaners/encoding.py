"""Bytes -> text for pages that declare no charset, or the wrong one.

Old web pages are UTF-8, windows-1252, or a mix of both (a cp1252 page later edited in a
UTF-8 editor). So decode per run of bytes: every well-formed UTF-8 sequence as UTF-8, every
other byte as windows-1252, where 0x80-0x9F are curly quotes, dashes and the euro sign
(Latin-1 would make them invisible C1 controls). The five bytes cp1252 leaves undefined
(0x81 0x8D 0x8F 0x90 0x9D) carry no text and are dropped, and so are C1 controls that come
out of valid UTF-8 (U+0080-U+009F become their cp1252 characters). The result is NFC, with
no U+FFFD and no mojibake ("â€™", "Ã©"), because UTF-8 bytes are never read as cp1252.
"""

from __future__ import annotations

import codecs
import unicodedata

ERROR_HANDLER = "charflow-cp1252"
UNDEFINED_CP1252 = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
# Byte -> text for bytes that are not part of a well-formed UTF-8 sequence.
_CP1252 = [
    "" if b in UNDEFINED_CP1252 else bytes([b]).decode("cp1252", errors="strict")
    for b in range(256)
]


# U+0080-U+009F in valid UTF-8 are cp1252 bytes once decoded as Latin-1 and re-encoded
# (double encoding); no real text uses these controls, so give them their cp1252 meaning.
C1_TO_CP1252 = {0x80 + i: _CP1252[0x80 + i] or None for i in range(32)}


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(_CP1252[b] for b in bad), err.end


codecs.register_error(ERROR_HANDLER, _cp1252_fallback)


def decode_bytes(data: bytes) -> str:
    """Decode web bytes of unknown encoding (UTF-8, windows-1252 or both mixed) to NFC text.

    The UTF-8 decoder reports each maximal ill-formed subsequence; the handler reads those
    bytes as cp1252, so valid UTF-8 runs stay UTF-8 and stray single bytes become cp1252.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return unicodedata.normalize("NFC", data.decode("utf-16").translate(C1_TO_CP1252))
        except UnicodeDecodeError:
            pass  # cut short or not UTF-16 after all ("þÿ" opening a cp1252 page): read on
    text = data.decode("utf-8", errors=ERROR_HANDLER).translate(C1_TO_CP1252)
    return unicodedata.normalize("NFC", text)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
