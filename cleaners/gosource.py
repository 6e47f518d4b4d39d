"""Go source files -> documents: which files to take, and the text of each.

A Go file becomes one document, byte for byte, headed by one comment line naming its path
in the tree, so the model sees where code lives the way a reader of the repository does:

    // path: pkg/kubelet/kubelet.go
    <the file, unchanged>
"""

from __future__ import annotations

import re

PATH_HEADER = "// path: {path}\n"
# golang.org/s/generatedcode: this line, before the first non-comment, non-blank text.
_GENERATED_LINE = re.compile(rb"^// Code generated .* DO NOT EDIT\.$")
_GENERATED_PREFIX = b"// Code generated "
_HEAD_BYTES = 1 << 16  # license headers are long, but not this long
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
    head = data[:_HEAD_BYTES]
    at = head.find(_GENERATED_PREFIX)
    while at >= 0:  # rare: most files never mention it, and are done in one find
        if at == 0 or head[at - 1 : at] == b"\n":
            end = head.find(b"\n", at)
            line = head[at : end if end >= 0 else len(head)].rstrip(b"\r")
            if _GENERATED_LINE.match(line):
                return _only_comments(head[:at])
        at = head.find(_GENERATED_PREFIX, at + 1)
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


def go_text(data: bytes) -> str:
    """The file as text; raises UnicodeDecodeError if it is not UTF-8 (Go requires it)."""
    return data.decode("utf-8")


def hidden(name: str) -> bool:
    return name.startswith(".")
