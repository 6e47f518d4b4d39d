"""sanguo: 三国演义 (Romance of the Three Kingdoms), one document per chapter (回).

Default source: the GBK text in Liangwe/word-frequency-count at a pinned commit (the copy
../shared/corpora/sanguo holds). Any URL or local file of the novel works the same way.

    charflow ingest sanguo
    charflow ingest sanguo --source ./三国演义.txt --option to_simplified=true
"""

from __future__ import annotations

from scrapers.chinese_novel import chinese_novel_spec
from scrapers.registry import register

DEFAULT_SOURCE = (
    "https://raw.githubusercontent.com/Liangwe/word-frequency-count/"
    "ea2ec1d562e6cdc22511c996f9dbeef9baa55260/%E4%B8%89%E5%9B%BD%E6%BC%94%E4%B9%89.txt"
)

SPEC = register(
    chinese_novel_spec(
        "sanguo",
        "三国演义 (Romance of the Three Kingdoms), one document per chapter",
        DEFAULT_SOURCE,
        mirror_path="sanguo/三国演义.txt",
    )
)
