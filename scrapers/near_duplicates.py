"""Near-duplicate documents: the same text reposted with small edits (another site's copy
of an essay, a chapter pasted twice with a fixed typo, a transcript with other credits).

Exact duplicates are caught by sha256; these are not. Each document becomes the set of its
character shingles (overlapping k-character pieces of the text, whitespace collapsed and
case folded: character shingles need no word boundaries, so Chinese works the same as
English or Go); their Jaccard similarity is estimated with MinHash, and candidates are
found with locality-sensitive hashing (datasketch's MinHashLSH), so a corpus is read in one
pass without comparing every pair.

Documents are taken in order; each one is compared with the documents kept so far, and is
a near-duplicate of the most similar of them whose estimated similarity reaches
`threshold`, or is kept. So every member of a group is close to the group's first (kept)
document, never only through a chain of others, and the result depends only on the
documents, their order and the parameters (the hashes are seeded).

    groups = near_duplicate_groups([("a", text_a), ("b", text_b), ...], threshold=0.8)
    for group in groups:
        print(group.keep, group.duplicates)   # "a", [("b", 0.91)]

`NearDuplicateFinder` is the same, one document at a time, for a writer that decides as
documents stream past (`add()` says what a document duplicates, if anything).

LSH finds pairs above the threshold with high probability, not certainty (see the
weights below): a pair a little above it can be missed, and similarities are estimates
(standard error about 0.035 near 0.8 with 128 hashes).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE = 5  # characters: short enough for Chinese, long enough to be specific
SEED = 1


@dataclass(frozen=True)
class NearDuplicateGroup:
    keep: str  # the first document of the group, in input order
    duplicates: list[tuple[str, float]] = field(default_factory=list)  # (id, est. Jaccard)


def shingles(text: str, size: int = DEFAULT_SHINGLE) -> set[str]:
    """The set of `size`-character pieces of text (whitespace runs as one space, case
    folded, NFC). A text shorter than `size` is one shingle; an empty one has none."""
    text = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    if len(text) <= size:
        return {text} if text else set()
    return {text[i : i + size] for i in range(len(text) - size + 1)}


class NearDuplicateFinder:
    """Streaming near-duplicate detection over documents added in order."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        num_perm: int = DEFAULT_NUM_PERM,
        shingle_size: int = DEFAULT_SHINGLE,
        seed: int = SEED,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 16:
            raise ValueError(f"num_perm must be at least 16, got {num_perm}")
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be at least 1, got {shingle_size}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        # Weighted against false negatives: every candidate is checked against the
        # threshold anyway, so a false positive costs one comparison, a false negative a
        # missed duplicate. A pair at the threshold is then found 92-97% of the time, one
        # 0.05 above it 98-99.8% (datasketch's even weights: 40-55% and 63-80%).
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
        self._kept: dict[str, MinHash] = {}
        self._order: dict[str, int] = {}
        # Making the permutations takes longer than hashing most documents: make them once.
        template = MinHash(num_perm=num_perm, seed=seed)
        self._permutations, self._scheme = template.permutations, template.scheme

    def minhash(self, text: str) -> MinHash | None:
        pieces = shingles(text, self.shingle_size)
        if not pieces:
            return None
        m = MinHash(
            num_perm=self.num_perm,
            seed=self.seed,
            permutations=self._permutations,
            scheme=self._scheme,
        )
        m.update_batch([p.encode("utf-8") for p in pieces])
        return m

    def add(self, doc_id: str, text: str) -> tuple[str, float] | None:
        """(id of the kept document it duplicates, estimated similarity), or None when the
        document is kept (it is then compared with the documents that follow). Empty
        documents are kept and never match: they have no shingles to compare."""
        if doc_id in self._order:
            raise ValueError(f"document id {doc_id!r} added twice")
        self._order[doc_id] = len(self._order)
        m = self.minhash(text)
        if m is None:
            return None
        best: tuple[float, int, str] | None = None
        for candidate in self._lsh.query(m):
            similarity = m.jaccard(self._kept[candidate])
            if similarity >= self.threshold:
                key = (similarity, -self._order[candidate], candidate)
                best = key if best is None or key > best else best
        if best is not None:
            return best[2], round(best[0], 4)
        self._kept[doc_id] = m
        self._lsh.insert(doc_id, m)
        return None


def near_duplicate_groups(
    documents: Iterable[tuple[str, str]],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    num_perm: int = DEFAULT_NUM_PERM,
    shingle_size: int = DEFAULT_SHINGLE,
    seed: int = SEED,
) -> list[NearDuplicateGroup]:
    """Groups of near-duplicate documents among (doc_id, text) pairs, in input order; a
    group's `keep` is its first document, `duplicates` the later ones (with their
    estimated Jaccard similarity to it). Documents without a near-duplicate are in no
    group. `threshold`: estimated Jaccard similarity of the shingle sets, in (0, 1]."""
    finder = NearDuplicateFinder(threshold, num_perm=num_perm, shingle_size=shingle_size, seed=seed)
    groups: dict[str, NearDuplicateGroup] = {}
    for doc_id, text in documents:
        found = finder.add(doc_id, text)
        if found is not None:
            kept, similarity = found
            groups.setdefault(kept, NearDuplicateGroup(kept)).duplicates.append(
                (doc_id, similarity)
            )
    order = finder._order
    return sorted(groups.values(), key=lambda g: order[g.keep])
