"""What a cleaner took out of the text, by rule: the record behind "what cleaning removed".

Every cleaner counts what each of its rules drops (or rewrites) as it goes, in a
`Removed` it returns with its result; the ingest adds the counts of every page or file up
for the corpus's manifest (`cleaning.rules`), so a user can audit a new source without
reading the cleaner:

    removed = Removed()
    removed.add("credit block", "Written by: Marta Kauffman")   # one line dropped
    removed.add("entity escaped twice", "&amp;ndash;", chars=10)  # a fix: chars it removed

`lines` counts the lines the rule removed whole, in the units the text had (lines of a
plain-text file, lines or blocks of a page, a whole file's lines); 0 for a rule that takes
characters out of lines it keeps (markup tags, references decoded, invisible characters);
`chars` the characters it removed; `examples` the first few, cut to one short line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXAMPLES = 3  # examples kept per rule
EXAMPLE_CHARS = 80


def example_text(text: str) -> str:
    """One line of at most EXAMPLE_CHARS characters ("…" where it was cut)."""
    line = " ".join(text.split())
    return line if len(line) <= EXAMPLE_CHARS else line[: EXAMPLE_CHARS - 1] + "…"


@dataclass
class RuleCount:
    """Lines one cleaning rule removed: how many, their characters, the first examples."""

    lines: int = 0
    chars: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, text: str, keep: int = EXAMPLES, *, lines: int = 1, chars: int | None = None):
        self.lines += lines
        self.chars += len(text) if chars is None else chars
        shown = example_text(text)
        if len(self.examples) < keep and shown and shown not in self.examples:
            self.examples.append(shown)


class Removed(dict[str, RuleCount]):
    """rule -> RuleCount, in the order the rules first fired."""

    def add(self, rule: str, text: str, *, lines: int = 1, chars: int | None = None) -> None:
        self.setdefault(rule, RuleCount()).add(text, lines=lines, chars=chars)
