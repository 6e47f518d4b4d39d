"""Go source files -> documents: which files to take, and the text of each.

A Go file becomes one document, byte for byte, headed by one comment line naming its path
in the tree, so the model sees where code lives the way a reader of the repository does:

    // path: pkg/kubelet/kubelet.go
    <the file, unchanged>

The store then drops trailing newlines and makes CRLF line ends LF (the Go compiler drops
carriage returns from raw strings too). A file that is not NFC (decomposed accents in a
string, a table of runes) is left out rather than normalized: the corpus is NFC, and
normalizing would change the code.
"""

from __future__ import annotations

import re
import unicodedata

PATH_HEADER = "// path: {path}\n"
# golang.org/s/generatedcode: this line, before the first non-comment, non-blank text.
_GENERATED_LINE = re.compile(rb"^// Code generated .* DO NOT EDIT\.$")
_GENERATED_PREFIX = b"// Code generated "
_HEAD_BYTES = 1 << 16  # license headers are long, but not this long
_NEWLINE = ord("\n")
# Folders a build leaves alone and a language model should too (unless asked).
EXCLUDED_DIRS = {"vendor": "include_vendor", "third_party": "include_third_party"}
EXCLUDED_DIRS |= {"testdata": "include_testdata"}


def document_text(path: str, source: str) -> str:
    """The document for one file: the path comment, then the file's text unchanged."""
    return PATH_HEADER.format(path=path) + source


def split_document(text: str) -> tuple[str, str]:
    """Inverse of document_text: (path, file text)."""
    header, _, body = text.partition("\n")
    prefix = PATH_HEADER.split("{", 1)[0]
    if not header.startswith(prefix):
        raise ValueError(f"not a Go document: {header[:80]!r}")
    return header[len(prefix) :], body


def generated_by_name(name: str) -> bool:
    """Generated code known by its file name: deepcopy/defaults/conversions, protobuf."""
    return name.startswith("zz_generated") or name.endswith(".pb.go")


def generated_by_header(data: bytes) -> bool:
    """Whether the file carries `// Code generated ... DO NOT EDIT.` before its code."""
    head_end = min(len(data), _HEAD_BYTES)
    at = data.find(_GENERATED_PREFIX, 0, head_end)
    while at >= 0:  # rare: most files never mention it, and are done in one find
        if at == 0 or data[at - 1] == _NEWLINE:
            end = data.find(b"\n", at, head_end)
            line = data[at : end if end >= 0 else head_end].rstrip(b"\r")
            if _GENERATED_LINE.match(line):
                return _only_comments(data[:at])
        at = data.find(_GENERATED_PREFIX, at + 1, head_end)
    return False


def _only_comments(text: bytes) -> bool:
    """Whether text holds nothing but blank lines and comments (no code yet)."""
    in_block = False
    for raw in text.splitlines():
        line = raw.strip()
        if in_block:
            in_block = b"*/" not in line
        elif line.startswith(b"/*"):
            in_block = b"*/" not in line[2:]
        elif line and not line.startswith(b"//"):
            return False
    return not in_block


def is_binary(data: bytes) -> bool:
    """Go source never holds a NUL byte; binaries and images almost always do."""
    return b"\x00" in data


# Control characters a Go file may hold (in a string or a comment) but a text corpus must
# not: all but tab, newline and carriage return (CRLF line ends become LF in the store).
# U+001E is the corpus's document separator. No Go file of Kubernetes, k8s.io/utils or the
# Go 1.19 standard library has one, so a file that does is left out, not edited.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def control_character(text: str) -> str | None:
    """'U+000C at offset 1234' for the first such control character in text, else None."""
    m = _CONTROL.search(text)
    return None if m is None else f"U+{ord(m[0]):04X} at offset {m.start()}"


def is_nfc(text: str) -> bool:
    """Whether text is in Unicode NFC; free for ASCII text (a flag on the str)."""
    return text.isascii() or unicodedata.is_normalized("NFC", text)


def go_text(data: bytes) -> str:
    """The file as text; raises UnicodeDecodeError if it is not UTF-8 (Go requires it)."""
    return data.decode("utf-8")


def hidden(name: str) -> bool:
    return name.startswith(".")
