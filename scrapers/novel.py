"""novel: any Chinese 章回体 novel in plain text, one document per chapter (回/章).

Give the book with --source (a URL, a local file, or chapter files in reading order);
the default is 西游记 (Journey to the West) from Liangwe/word-frequency-count at a pinned
commit (the copy ../shared/corpora/xiyouji holds). The title comes from the file's title
page, else its name; `--option title=…` sets it.

    charflow ingest novel --source ./红楼梦.txt
    charflow ingest novel --source ./三國演義-big5.txt --to-simplified --option title=三国演义
    charflow ingest novel --source ./book.txt --option keep_extras=true   # prefaces too
"""

from __future__ import annotations

from scrapers.chinese_novel import chinese_novel_spec
from scrapers.registry import register

DEFAULT_SOURCE = (
    "https://raw.githubusercontent.com/Liangwe/word-frequency-count/"
    "ea2ec1d562e6cdc22511c996f9dbeef9baa55260/%E8%A5%BF%E6%B8%B8%E8%AE%B0.txt"
)

SPEC = register(
    chinese_novel_spec(
        "novel",
        "Any Chinese novel (--source FILE or URL), one document per chapter",
        DEFAULT_SOURCE,
        mirror_path="xiyouji/西游记.txt",
    )
)
