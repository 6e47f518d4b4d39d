"""Chinese novels in plain text (UTF-8, UTF-16, GBK, GB18030, Big5) -> clean chapters.

A 章回体 novel copied from the web is the novel wrapped in whatever the site, the typist
or the scanner added. The layouts vary from file to file, the parts do not:

    [site notice]  ---- 更多TXT电子书请访问 www.example.com ----     dropped, recorded
    [title page]   西游记(吴承恩) / 作者：吴承恩                      dropped, title kept
    [preface]      序 / 前言 / 内容简介 …                           dropped, recorded
    [contents]     第001回 灵根育孕源流出 … (headings without text)  dropped, recorded
    [chapters]     第一回　宴桃园豪杰三结义　斩黄巾英雄首立功      one document each
                   (a repeated heading line, a running header such as
                   "吴承恩--西游记--第一回 …", page numbers, rules and ad lines
                   between chapters are removed)
    [appendix]     附录 / 后记 / 跋                                  dropped, recorded
    [site notice]                                                     dropped, recorded

This module finds those parts by what their lines are, never by a file's name: a heading
is `第N回/章/节/集`, `卷N`/`第N卷`/`第N部`, or a section word (楔子, 序, 附录, 后记 …);
a table of contents is headings with no text under them (or one listed again later with
the full text); a site notice is lines with a URL or a download site's phrases, or a
short block that is mostly such lines. Each part is recorded, kept or dropped, in
`Novel.sections`, and each removed line is counted by rule in `Novel.removed`.

Within a chapter, hard-wrapped lines are joined into paragraphs (Chinese joins without a
space), indented verse is kept one line per verse line, and a sentence cut by a page
number or a rule is joined back:

    第一回　宴桃园豪杰三结义　斩黄巾英雄首立功      heading line
    滚滚长江东逝水，浪花淘尽英雄。是非成败转头空。  verse: one line per verse line
    话说天下大势，分久必合，合久必分。……          prose: one line per paragraph
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from cleaners.removed import Removed

# ---------------------------------------------------------------------------- decoding

# Each family is tried narrowest first; the first strict decode in a family stands for it.
_FAMILIES = (("gbk", "gb18030"), ("big5", "cp950", "big5hkscs"))
_BOMS = (
    (codecs.BOM_UTF8, "utf_8_sig"),
    (codecs.BOM_UTF16_LE, "utf_16"),
    (codecs.BOM_UTF16_BE, "utf_16"),
)
# The most frequent characters of Chinese prose (Simplified, then the Traditional forms
# that differ) and the full-width punctuation. Decoded with the right codec, most of a
# Chinese text is these; decoded with a wrong one (GBK bytes read as Big5, or any bytes
# as UTF-16), the same bytes land on rare characters. GBK and Big5 overlap so much that a
# file often decodes strictly as both: this is how the two are told apart.
_COMMON_CHARS = frozenset(
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着"
    "去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主"
    "行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二"
    "理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走"
    "电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市"
    "眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提"
    "感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它"
    "许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青"
    "管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步"
    "完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持"
    "取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯"
    "专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴切随医怕急兰曰乃矣焉哉吾汝尔乎兮"
    "這來個國說們爲時會過學對裏後麼沒於還發當無開見經頭從動兩長樣現將與進實點種聲話兒"
    "問機給幾業間電門東聽氣關並內卻軍產萬體別處總場師書員華報馬張難數車應計親務臺記邊"
    "風戰幹許覺題統請愛讓認論喫義術結連遠資隊帶條變聯權該領傳紅決達辦運強區轉衆輕語滿"
    "寫識極黃臉錢黨設雙歷廣議際則單據導網專誰讀飛觀爭組視濟離雖壞興隨醫蘭爾為裡眾"
    "，。、；：？！“”‘’「」『』《》（）…—·"
)
# Share of a decode's non-ASCII characters that must be common ones (correct decodes of
# novels measure 0.4-0.6, wrong ones under 0.05).
MIN_PLAUSIBILITY = 0.15
_SAMPLE_CHARS = 200_000
# C0 controls other than tab, newline, CR and form feed: text files hold at most a few
# (a DOS end-of-file mark); a UTF-16 file read as GBK is full of NULs.
_BAD_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U0010fffd]")  # BMP, planes 15-16


class EncodingError(ValueError):
    """The bytes are not cleanly any of the candidate encodings."""


@dataclass
class Decoded:
    text: str
    encoding: str
    pua_chars: int  # characters the codec mapped into a Private Use Area


def count_pua(text: str) -> int:
    return len(_PRIVATE_USE.findall(text))


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    # Some codecs map undefined bytes to U+FFFD instead of failing; UTF-8 only yields it
    # where the file itself holds it (the cleaning drops those).
    return None if "\ufffd" in text and encoding != "utf_8" else text


def plausibility(text: str) -> float:
    """Share of the non-ASCII, non-space characters that are common Chinese characters or
    punctuation (1.0 for text without any); 0.0 when the text is full of control bytes."""
    sample = text[:_SAMPLE_CHARS]
    if len(_BAD_CONTROLS.findall(sample)) > 8:
        return 0.0
    wide = [c for c in sample if c > "\x7f" and not c.isspace()]
    if not wide:
        return 1.0
    return sum(c in _COMMON_CHARS for c in wide) / len(wide)


def decode_chinese(data: bytes) -> Decoded:
    """Decode a Chinese text file: by its BOM; as UTF-8 when it is valid UTF-8; else the
    strict decode (GBK or else GB18030; Big5; UTF-16 without BOM) that reads most like
    Chinese (see `plausibility`). Raises EncodingError saying what was tried."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = _strict(data, encoding)
            if text is None:
                raise EncodingError(f"has a {encoding} byte-order mark but does not decode as it")
            text = text.lstrip("\ufeff")
            return Decoded(text, encoding.removesuffix("_sig"), count_pua(text))
    text = _strict(data, "utf_8")
    if text is not None:
        return Decoded(text, "utf_8", count_pua(text))
    tried = ["utf_8"]
    decodes: list[tuple[str, str]] = []
    for family in _FAMILIES:
        for encoding in family:
            tried.append(encoding)
            text = _strict(data, encoding)
            if text is not None:
                decodes.append((encoding, text))
                break
    if len(data) % 2 == 0 and b"\x00" in data:  # UTF-16 text has NULs in ASCII characters
        for encoding in ("utf_16_le", "utf_16_be"):
            tried.append(encoding)
            text = _strict(data, encoding)
            if text is not None:
                decodes.append((encoding, text))
    scored = [(plausibility(text), -i, enc, text) for i, (enc, text) in enumerate(decodes)]
    if scored:
        score, _, encoding, text = max(scored)
        if score >= MIN_PLAUSIBILITY:
            encoding = "utf_16" if encoding.startswith("utf_16") else encoding
            return Decoded(text, encoding, count_pua(text))
    read = ", ".join(f"{enc} {score:.0%}" for score, _, enc, _ in scored) or "none"
    raise EncodingError(
        f"not cleanly decodable as {', '.join(tried)} "
        f"(common Chinese characters in the strict decodes: {read})"
    )


# ---------------------------------------------------------------------------- numerals

_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4}
_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_DIGITS |= dict(zip("壹贰貳叁參肆伍陆陸柒捌玖", (1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9), strict=True))
_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_TENS = {"廿": "二十", "卅": "三十", "卌": "四十"}  # 廿一 = 21 in older texts
_NUMERALS = "〇零一二两兩三四五六七八九十百千廿卅卌壹贰貳叁參肆伍陆陸柒捌玖拾佰仟0-9０-９"


def chinese_number(numeral: str) -> int:
    """'一' -> 1, '十' -> 10, '三十五' -> 35, '一百零五' -> 105, '一二〇' -> 120, '12' -> 12,
    '廿一' -> 21. Raises ValueError for anything else."""
    numeral = unicodedata.normalize("NFKC", numeral)
    if numeral.isdigit():
        return int(numeral)
    for short, long in _TENS.items():
        numeral = numeral.replace(short, long)
    if not numeral:
        raise ValueError("empty numeral")
    if not any(c in _UNITS for c in numeral):  # digit by digit: 一二〇
        try:
            return int("".join(str(_DIGITS[c]) for c in numeral))
        except KeyError:
            raise ValueError(f"not a Chinese numeral: {numeral!r}") from None
    total, digit = 0, None
    for c in numeral:
        if c in _DIGITS:
            digit = _DIGITS[c]
        elif c in _UNITS:
            total += (1 if digit is None else digit) * _UNITS[c]
            digit = None
        else:
            raise ValueError(f"not a Chinese numeral: {numeral!r}")
    return total + (digit or 0)


# ---------------------------------------------------------------------------- lines

_SPACE_CHARS = " \t\u3000\xa0\u2002\u2003\u2009"
_SPACE_RUN = re.compile(r"[ \t\u3000\xa0\u2002\u2003\u2009]+")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# An ASCII or no-break space between two Han characters is an artefact (OCR, a re-wrap);
# U+3000 is not, it separates verse lines and the halves of a heading.
_CJK = _HAN + "\u3001-\u303f\uff01-\uff60“”‘’…—·"
_STRAY_SPACE = re.compile(f"(?<=[{_CJK}])[ \xa0]+(?=[{_CJK}])")
_CLOSING = tuple("。．｡！？；：”’」』）》…!?;")
_MAX_HEADING_CHARS = 60
_MAX_AD_CHARS = 100
_MAX_NOTICE_LINES = 15  # a site notice is a short block

# Separator lines: rules of dashes, stars, dots, equals (spaced or not), page numbers
# ("12", "- 12 -", "第12页", "Page 12"), and form feeds.
_RULE_LINE = re.compile(
    r"^(?:[-=*_~#·.。—－＝＊～※☆★◆◇○●■□+<>|\s]{3,}"
    # a page marker of a PDF conversion: "----------- Page 12-----------"
    r"|[-=*_~—－＝\s]{2,}(?:[Pp]age|第)?\s*\d{1,5}\s*(?:页|頁)?[-=*_~—－＝\s]{2,}"
    r"|[-—－(（\[【〔<]*\s*(?:第\s*)?\d{1,4}\s*(?:页|頁)?\s*[-—－)）\]】〕>]*"
    r"|[Pp]age\s*\d{1,4}(?:\s*/\s*\d+)?|\d{1,4}\s*/\s*\d{1,4}|\f)$"
)
_URL = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|cn|cc|tw|hk|info|top|xyz|la|vip|biz)\b"
    r"|[\w.+-]+@[\w-]+\.[\w.-]+",
    re.IGNORECASE,
)
# What download sites and typists add: phrases a novel's own text (its dialogue included:
# "欢迎光临", "请记住", "微信" can be said) does not use. Simplified and Traditional forms.
_AD_PHRASES = re.compile(
    # (the lookahead lets the search skip, in C, the positions no phrase starts at)
    r"(?=[本更请請电電tT下小书書免手最整校扫掃O收加网網转轉禁版侵购購支正仅僅商输輸录錄制製"
    r"Qq微公无無欢歡记記求未])(?:"
    r"本[书書](?:来|來)自|本[书書]由|更多.{0,24}(?:访问|訪問|尽在|盡在|关注|關注|登[录錄])|"
    r"[请請](?:访问|訪問)|[记記]住(?:本|[网網]址|域名)|[电電]子[书書]|txt|小[说說][网網]|"
    r"(?:[书書]|小[说說]|全集|免[费費]|精彩|好[书書]).{0,10}下[载載]|下[载載].{0,10}(?:[网網]|站)|"
    r"[书書](?:库|庫|城|吧)[网網]|免[费費](?:阅|閱|下|小|[电電])|手[机機](?:阅|閱|用|访|訪|版)|"
    r"最新章[节節]|整理校[对對]|校[对對][:：]|[扫掃](?:描|校)[:：校]|OCR|收藏本|加入收藏|"
    r"本[站网網]|[书書]友|[网網]友(?:提供|上[传傳]|整理|分享)|[转轉][载載](?:请|請|自)|"
    r"禁止[转轉][载載]|请勿[转轉][载載]|版[权權]|侵[权權]|(?:购买|購買|支持)正版|正版(?:订|訂|阅|閱)|"
    r"[仅僅]供(?:读|讀|学|學|交|参|參|研|试|試)|商[业業]用途|^(?:输入|輸入|录入|錄入|制作|製作)[:：]|"
    r"QQ[群号號:：]|微信(?:公|号|號|搜)|公[众眾][号號]|无弹窗|無彈窗|更新最快|"
    r"[欢歡]迎(?:光[临臨]|[访訪]问|[访訪]問).{0,8}(?:[网網]|站|[书書])|"
    r"求(?:收藏|推荐|推薦|月票|订阅|訂閱|打赏|打賞|票)|本章(?:完|结束|結束)|未完待[续續])",
    re.IGNORECASE,
)

# Chapter headings: 第N回 / 第N章 / 第N节 / 第N集 (chapter level), 第N卷 / 卷N / 卷之N /
# 第N部 / 第N篇 / 上卷 (volume level), optionally behind a breadcrumb ("作者--书名--") or
# 正文, in brackets, and followed by the title after a space or a colon.
_CHAPTER_UNITS = "回章节節集"
_VOLUME_UNITS = "卷部篇册冊"
_UNIT_RANK = {u: i for i, u in enumerate("回章节集")}
_PREFIX = r"(?P<prefix>(?:[^\s—\-/>|·:：。，]{1,30}\s*(?:--|——|—|-|/|>|»|\||·)\s*){1,3}|正文\s*)?"
_TITLE = r"(?:(?:[\s:：、.．·—\-]|(?<=[】〕\]]))+(?P<title>.*?))?"
_HEADING = re.compile(
    rf"^{_PREFIX}[【〔\[]?\s*(?:"
    rf"第\s*(?P<num>[{_NUMERALS}]+)\s*(?P<unit>[{_CHAPTER_UNITS}{_VOLUME_UNITS}])"
    rf"|(?P<vunit>[卷])\s*(?:之|第)?\s*(?P<vnum>[{_NUMERALS}]+)"
    rf"|(?P<side>[上中下])\s*(?P<sunit>[卷部册冊])"
    rf")\s*[】〕\]]?{_TITLE}\s*$"
)
_HEADING_ANYWHERE = re.compile(rf"第\s*[{_NUMERALS}]+\s*[{_CHAPTER_UNITS}]")
# Dot leaders and page numbers after a table-of-contents entry.
_LEADER = re.compile(r"\s*(?:[.．·…_]{3,}\s*\d+|[.．·_]{4,})$")
# Section words: kind -> words (characters may be spaced out: "附　录", "后 记").
_SECTION_WORDS = {
    "prologue": "楔子 引子 序章 序幕 开篇 開篇 引首",
    "epilogue": "尾声 尾聲 终章 終章",
    "contents": "目录 目錄 目次 总目 總目",
    "preface": "出版说明 出版說明 内容简介 內容簡介 内容提要 內容提要 作者简介 作者簡介 "
    "序言 自序 原序 代序 前言 引言 导言 導言 题记 題記 简介 簡介 凡例 弁言 小引 序 叙 敘",
    "appendix": "附录 附錄 附记 附記 附文 附件 附",
    "afterword": "编后记 編後記 译后记 譯後記 后记 後記 后序 後序 结语 結語 跋",
}
_SECTION_KIND = {w: kind for kind, words in _SECTION_WORDS.items() for w in words.split()}
_SECTION = re.compile(
    rf"^{_PREFIX}[【〔\[]?\s*(?P<word>"
    + "|".join(r"\s*".join(map(re.escape, w)) for w in sorted(_SECTION_KIND, key=len, reverse=True))
    + r")\s*[】〕\]]?(?:(?:[\s:：、.．·—\-]|(?<=[】〕\]]))+(?P<title>[^。！？]{0,40}?))?\s*$"
)
_HEADING_STARTS = frozenset("第卷上中下【〔[") | {w[0] for w in _SECTION_KIND}
_PREFIX_HINT = re.compile(r"--|——|—|-|/|>|»|\||·|正文")
# A couplet title on the line after a bare "第一回": two runs of 3-12 Han characters.
_COUPLET = re.compile(rf"^(?P<a>[{_HAN}]{{3,12}})[\s\u3000]+(?P<b>[{_HAN}]{{3,12}})$")
_TITLE_LINE = re.compile(r"^(?:书名|書名)[:：]\s*(?P<title>.+)$|^《(?P<quoted>[^》]{1,30})》")
_AUTHOR = re.compile(r"(?:作者|著者)\s*[:：;；]\s*(?P<author>[^\s,，。]{1,20})")
_NAME_AUTHOR = re.compile(r"^(?P<title>[^\s(（]{1,20})\s*[(（](?P<author>[^)）]{1,12})[)）]$")
# Control characters other than newline, tab and form feed; invisible format characters
# that carry no text; U+FFFD marks a character lost before the file reached us.
_DROP_CHARS = re.compile("[\x00-\x08\x0b\x0d-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff\ufffd]")


@dataclass(frozen=True)
class Heading:
    level: str  # "chapter", "volume" or "section"
    unit: str  # 回 章 节 集 卷 部 … or a section kind: "preface", "appendix", …
    number: int | None
    title: str  # the part after the number or word, spaces collapsed
    line: str  # the heading as printed, without a breadcrumb; runs of spaces collapsed
    prefix: str = ""  # a breadcrumb or running header before it ("吴承恩--西游记--")
    contents_row: bool = False  # several headings on one line: a table of contents row


def _collapse_spaces(text: str) -> str:
    return _SPACE_RUN.sub(lambda m: "\u3000" if "\u3000" in m[0] else " ", text).strip()


_HEADING_GAP = re.compile(f"(?<=[{_CJK}0-9])[ \t\u3000\xa0\u2002\u2003\u2009]+(?=[{_CJK}])")


def _heading_spaces(text: str) -> str:
    """Spaces between the parts of a Chinese heading are one U+3000, whatever the file
    used ("第一回  甄士隐梦幻识通灵  贾雨村风尘怀闺秀" -> "第一回　甄士隐…　贾雨村…"), so
    every book's headings read alike; spaces next to Latin text stay one space."""
    return _collapse_spaces(_HEADING_GAP.sub("\u3000", text))


def _clean_title(title: str) -> str:
    return _collapse_spaces(_LEADER.sub("", title)).strip(" :：、.．·—-")


def parse_heading(line: str) -> Heading | None:
    """The heading on `line` (a chapter, a volume or a section such as 序 or 附录), or None."""
    text = line.strip(_SPACE_CHARS)
    if not text or len(text) > _MAX_HEADING_CHARS:
        return None
    if text[0] not in _HEADING_STARTS and not _PREFIX_HINT.search(text, 0, 36):
        return None  # most lines: no heading can start there (a quick test before the regexes)
    m = _HEADING.match(text)
    if m:
        prefix = m["prefix"] or ""
        try:
            if m["unit"]:
                number, unit = chinese_number(m["num"]), m["unit"].replace("節", "节")
            elif m["vunit"]:
                number, unit = chinese_number(m["vnum"]), "卷"
            else:
                number, unit = "上中下".index(m["side"]) + 1, m["sunit"]
        except ValueError:
            return None
        title = _heading_spaces(_clean_title(m["title"] or ""))
        level = "chapter" if unit in _CHAPTER_UNITS else "volume"
        printed = _heading_spaces(text[len(prefix) :])
        row = _HEADING_ANYWHERE.search(title) is not None
        return Heading(level, unit, number, title, printed, prefix, row)
    m = _SECTION.match(text)
    if m:
        word = re.sub(r"\s+", "", m["word"])
        prefix = m["prefix"] or ""
        title = _heading_spaces(_clean_title(m["title"] or ""))
        printed = _heading_spaces(text[len(prefix) :])
        return Heading("section", _SECTION_KIND[word], None, title, printed, prefix)
    return None


def is_ad(text: str) -> bool:
    """A short line with a URL, an e-mail address or a download site's phrase."""
    if len(text) > _MAX_AD_CHARS:
        return False
    has_url = ("." in text or "@" in text) and _URL.search(text) is not None
    return has_url or _AD_PHRASES.search(text) is not None


def is_noise(line: str) -> bool:
    """A separator line (rule, page number) or a site's ad line."""
    text = line.strip(_SPACE_CHARS)
    return bool(text) and (bool(_RULE_LINE.match(text)) or is_ad(text))


# Line kinds.
BLANK, RULE, AD, HEADING, TEXT = "blank", "rule", "ad", "heading", "text"
GONE, CONTENTS = "gone", "contents"  # a merged heading or couplet; a contents entry
HEADER = "header"  # a running page header or footer ("西游记 · 吴承恩" by each page number)
_NOT_TEXT = frozenset({BLANK, RULE, AD, GONE, CONTENTS, HEADER})
_PAGE_BREAK = frozenset({RULE, AD, HEADER})
_RUNNING_HEADER_MIN = 3  # times a short line must stand by a page number


@dataclass
class _Line:
    number: int  # 1-based, in the text as given
    raw: str  # without trailing spaces
    body: str  # without leading spaces either
    kind: str
    heading: Heading | None = None
    width: int = 0  # display columns of `raw`
    indent: int = 0  # display columns before `body`


@dataclass
class Section:
    """One part of the file, in order, and what became of it."""

    kind: str  # chapter, prologue, epilogue, preface, appendix, afterword, contents,
    #            front matter, site notice
    heading: str  # the heading line, or a description of an untitled part
    first_line: int  # 1-based line numbers in the text
    last_line: int
    chars: int  # characters of text (without blank, rule and ad lines)
    kept: bool
    reason: str = ""  # why it was dropped (or a note on a kept one)

    @property
    def what(self) -> str:
        return self.heading or f"{self.kind}, lines {self.first_line}-{self.last_line}"


@dataclass
class Chapter:
    number: int | None
    heading: str  # the heading line as printed, e.g. "第一回　宴桃园豪杰三结义　斩黄巾英雄首立功"
    title: str  # the part after the number
    text: str  # heading line, then one line per paragraph or verse line
    pua_chars: int = 0
    kind: str = "chapter"  # or prologue, epilogue; preface, appendix, afterword if kept
    volume: str | None = None  # the volume heading above it, if the book has volumes


@dataclass
class Novel:
    chapters: list[Chapter]
    sections: list[Section] = field(default_factory=list)
    removed: Removed = field(default_factory=Removed)  # rule -> lines removed
    title: str | None = None  # the book's title, if the file names it
    author: str | None = None

    @property
    def dropped(self) -> list[tuple[str, str]]:
        """(what, why) of every part that did not become a document."""
        return [(s.what, s.reason) for s in self.sections if not s.kept]


def prepare_text(text: str) -> str:
    """NFC, LF line ends, form feeds on lines of their own, no control or lost characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    text = text.replace("\u2029", "\n").replace("\f", "\n\f\n")
    return unicodedata.normalize("NFC", _DROP_CHARS.sub("", text))


def _classify(text: str) -> list[_Line]:
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip(_SPACE_CHARS)
        body = raw.strip(_SPACE_CHARS)
        if not body:
            kind, heading = BLANK, None
        elif _RULE_LINE.match(body):
            kind, heading = RULE, None
        else:
            heading = parse_heading(body)
            kind = HEADING if heading else AD if is_ad(body) else TEXT
        width = _width(raw)
        indent = width - _width(body) if raw[:1] in _SPACE_CHARS else 0
        lines.append(_Line(number, raw, body, kind, heading, width, indent))
    _mark_running_headers(lines)
    return lines


def _mark_running_headers(lines: list[_Line]) -> None:
    """A text converted from printed pages repeats a short line (the book's or the
    chapter's name) by every page number: such a line, seen there three times or more
    (digits aside), is not the novel's text."""
    by_page: dict[str, list[_Line]] = {}
    for i, line in enumerate(lines):
        if line.kind != RULE or not (line.body == "\f" or any(c.isdigit() for c in line.body)):
            continue
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(lines) and lines[j].kind == BLANK:
                j += step
            if 0 <= j < len(lines) and lines[j].kind == TEXT and len(lines[j].body) <= 30:
                key = re.sub(r"\d+", "#", lines[j].body)
                by_page.setdefault(key, []).append(lines[j])
    for found in by_page.values():
        if len({x.number for x in found}) >= _RUNNING_HEADER_MIN:
            for line in found:
                line.kind = HEADER


def _mark_notice_blocks(lines: list[_Line]) -> None:
    """A short block (between blank lines, rules, headings or the file's ends) with two
    or more ad lines making half of it is a site notice as a whole: "版权声明：本站… /
    均由网友提供 / 仅供学习交流 / …" (not every line names the site)."""
    block: list[_Line] = []

    def close() -> None:
        ads = sum(x.kind == AD for x in block)
        short = all(len(x.body) <= _MAX_AD_CHARS for x in block)
        if short and len(block) <= _MAX_NOTICE_LINES and ads >= 2 and 2 * ads >= len(block):
            for x in block:
                if not _names_the_book(x.body):  # "《水浒传》作者；施耐庵" above a notice
                    x.kind = AD
        block.clear()

    for line in lines:
        if line.kind in (TEXT, AD):
            block.append(line)
        else:
            close()
    close()


def _names_the_book(text: str) -> bool:
    return bool(_TITLE_LINE.match(text) or _AUTHOR.search(text) or _NAME_AUTHOR.match(text))


def _next_content(lines: list[_Line], i: int) -> int | None:
    """Index of the next line after i that is not blank, a separator or an ad."""
    for j in range(i + 1, len(lines)):
        if lines[j].kind not in _NOT_TEXT:
            return j
    return None


def _same_heading(a: Heading, b: Heading) -> bool:
    if a.level != b.level or a.unit != b.unit or a.number != b.number:
        return False
    return not a.title or not b.title or a.title == b.title


def _merge_headings(lines: list[_Line], removed: Removed) -> None:
    """A heading printed twice in a row (the second time as a running header, or just
    repeated) counts once; a bare "第一回" takes the couplet on the next line as title."""
    for i, line in enumerate(lines):
        if line.kind != HEADING:
            continue
        j = _next_content(lines, i)
        if j is None:
            continue
        nxt, h = lines[j], line.heading
        if nxt.kind == HEADING and _same_heading(h, nxt.heading):
            b = nxt.heading
            # keep the one without a breadcrumb, then the one with a title
            first_better = (not h.prefix, bool(h.title)) > (not b.prefix, bool(b.title))
            gone = nxt if first_better else line
            if first_better and not h.title and b.title:
                line.heading = Heading(h.level, h.unit, h.number, b.title, b.line)
            removed.add("repeated heading", gone.body)
            gone.kind = GONE
        elif nxt.kind == TEXT and h.level == "chapter" and not h.title:
            m = _COUPLET.match(nxt.body)
            if m and abs(len(m["a"]) - len(m["b"])) <= 1:
                title = f"{m['a']}\u3000{m['b']}"
                line.heading = Heading(
                    h.level, h.unit, h.number, title, f"{h.line}\u3000{title}", h.prefix
                )
                nxt.kind = GONE


def _choose_unit(lines: list[_Line]) -> None:
    """Which heading unit makes chapters: of 回/章/节/集, the highest-ranked one with at
    least two headings (节 under 章 are parts of a chapter and stay as text lines).
    Volume headings make the chapters of a book that has no chapter headings."""
    units = Counter(
        x.heading.unit for x in lines if x.kind == HEADING and x.heading.level == "chapter"
    )
    usable = [u for u, n in units.items() if n >= 2] or list(units)
    chosen = min(usable, key=_UNIT_RANK.__getitem__) if usable else None
    for line in lines:
        h = line.heading
        if line.kind != HEADING:
            continue
        if h.level == "chapter" and h.unit != chosen:
            line.kind, line.heading = TEXT, None
        elif h.level == "volume" and chosen is None:
            line.heading = Heading(
                "chapter", h.unit, h.number, h.title, h.line, h.prefix, h.contents_row
            )


def _contents_entries(lines: list[_Line], heads: list[int]) -> set[int]:
    """Which headings (positions in `heads`) are table-of-contents entries: a row with
    several headings; a heading with no text before the next one (except a volume
    heading right above its first chapter); the entry after those whose number is
    listed again later over five times the text (the last entry of a contents list
    "owns" whatever follows the list, a preface say); a volume heading between entries."""
    if not heads:
        return set()
    ends = heads[1:] + [len(lines)]
    chars = [
        sum(len(x.body) for x in lines[start + 1 : end] if x.kind == TEXT)
        for start, end in zip(heads, ends, strict=True)
    ]
    entries = set()
    for k, start in enumerate(heads):
        h = lines[start].heading
        nxt = lines[heads[k + 1]].heading if k + 1 < len(heads) else None
        above_chapter = h.level == "volume" and nxt is not None and nxt.level == "chapter"
        if h.contents_row or (chars[k] == 0 and nxt is not None and not above_chapter):
            entries.add(k)
    most: dict[tuple, int] = {}  # (level, unit, number) -> most text under a later one
    for k in range(len(heads) - 1, -1, -1):
        h = lines[heads[k]].heading
        key = (h.level, h.unit, h.number)
        if h.level != "section" and k - 1 in entries and 5 * chars[k] < most.get(key, 0):
            entries.add(k)
        most[key] = max(most.get(key, 0), chars[k])
    for k in range(1, len(heads) - 1):
        if k - 1 in entries and k + 1 in entries:
            entries.add(k)
    return entries


def _layout(entries: list[tuple[int, str, int]]) -> tuple[int | None, int]:
    """(wrap width or None if not hard-wrapped, usual paragraph indentation width), from
    the (indent, body, width) of each line."""
    widths = Counter(width for _, body, width in entries if body and width >= 40)
    nonblank = sum(1 for _, body, _ in entries if body)
    mode = widths.most_common(1)[0][0] if widths else None
    near = sum(n for w, n in widths.items() if mode is not None and abs(w - mode) <= 4)
    wrap = mode if mode is not None and near >= 0.3 * nonblank else None
    if wrap is not None:
        # Wrapped: continuation lines are flush, so the usual indentation is that of the
        # first lines of paragraphs, the most common non-zero one.
        indents = Counter(indent for indent, body, _ in entries if body and indent)
    else:
        indents = Counter(indent for indent, body, _ in entries if body)
    normal_indent = indents.most_common(1)[0][0] if indents else 0
    return wrap, normal_indent


@functools.cache
def _char_width(c: str) -> int:
    # Full-width and ambiguous characters take two columns in a Chinese text file.
    return 2 if unicodedata.east_asian_width(c) in "WFA" else 1


def _width(text: str) -> int:
    return len(text) if text.isascii() else sum(map(_char_width, text))


def _join(left: str, right: str) -> str:
    # Chinese joins without a space; only two Latin words broken by the wrap need one.
    if left[-1:].isascii() and left[-1:].isalnum() and right[:1].isascii() and right[:1].isalnum():
        return f"{left} {right}"
    return left + right


def _prose(body: str) -> str:
    return _STRAY_SPACE.sub("", _collapse_spaces(body))


def _verse_lines(block: list[str]) -> list[str]:
    """Indented verse: rejoin lines wrapped mid-verse, then one line per verse line."""
    joined: list[str] = []
    for line in block:
        if joined and not joined[-1].endswith(_CLOSING) and not line.startswith("——"):
            joined[-1] += line
        else:
            joined.append(line)
    out = []
    for text in joined:
        out.extend(part for part in re.split(r"\u3000{2,}|\s{2,}", text) if part.strip())
    return [_collapse_spaces(v) for v in out]


def _prose_lines(
    block: list[tuple[int, str, int, bool]], wrap: int | None, normal_indent: int = 1
) -> list[str]:
    """Rejoin one run of consecutive prose lines, given as (indent, body, width, after a
    page break inside a sentence).

    A line continues the one before when the file is hard-wrapped and the line before
    was full: within a few columns of the run's typical width (the median, without the
    last line), since quoted documents are wrapped narrower than the rest. Where the run
    mixes indented and flush lines, an indented line always starts a new paragraph and a
    flush line continues an unfinished sentence (a line indented less than paragraphs are
    counts as flush: a PDF conversion puts a space before a leading “). A line after a
    page break continues an unfinished sentence whatever the layout.
    """
    widths = sorted(width for _, _, width, _ in block[:-1]) or [0]
    full = widths[len(widths) // 2] - 6
    uniform = len({indent for indent, _, _, _ in block}) == 1
    out: list[str] = []
    prev_width = 0
    for indent, body, width, resumes in block:
        if uniform:
            joins = prev_width >= full
        else:  # a flush line after an unfinished sentence was wrapped early, by hand
            joins = bool(out) and (indent == 0 or indent < normal_indent)
            joins = joins and (prev_width >= full or not out[-1].endswith(_CLOSING))
        if out and (resumes or (wrap and joins)):
            out[-1] = _join(out[-1], _prose(body))
        else:
            out.append(_prose(body))
        prev_width = width
    return out


def _paragraphs(lines: list[_Line], wrap: int | None, normal_indent: int) -> list[str]:
    """Body lines -> one line per paragraph or verse line. A blank line ends a paragraph;
    a page break (rules, page numbers or ad lines, with the blank lines around them) is
    invisible in a hard-wrapped file, and joins an unfinished sentence in any file."""
    out: list[str] = []
    run: list[tuple[int, str, int, bool]] = []  # consecutive prose lines
    verse: list[str] = []  # consecutive verse lines
    resumes = False  # the next prose line continues a sentence cut by a page break

    def flush() -> None:
        if run:
            out.extend(_prose_lines(run, wrap, normal_indent))
            run.clear()
        if verse:
            out.extend(_verse_lines(verse))
            verse.clear()

    i = 0
    while i < len(lines):
        if lines[i].kind in _NOT_TEXT:
            j = i
            while j < len(lines) and lines[j].kind in _NOT_TEXT:
                j += 1
            kinds = {x.kind for x in lines[i:j]}
            i = j
            page_break = bool(kinds & _PAGE_BREAK)
            if page_break and wrap:
                continue  # the run goes on: widths and indentation decide
            if page_break and run and not run[-1][1].endswith(_CLOSING):
                resumes = True
                continue
            if page_break or BLANK in kinds:
                flush()
            continue
        line = lines[i]
        i += 1
        if line.kind == HEADING:
            flush()
            out.append(line.heading.line)
            continue
        indent, body = line.indent, line.raw.lstrip(_SPACE_CHARS)
        if indent > normal_indent and not resumes:  # verse is indented deeper than prose
            if run:
                flush()
            # keep the inner U+3000 runs: they separate verse lines
            verse.append(_SPACE_RUN.sub(lambda m: m[0] if "\u3000" in m[0] else " ", body))
        else:
            if verse:
                flush()
            run.append((indent, body, line.width, resumes))
            resumes = False
    flush()
    return out


def paragraphs(text: str) -> list[str]:
    """Lines -> one line per heading, paragraph or verse line; noise lines dropped."""
    lines = _classify(prepare_text(text))
    wrap, normal_indent = _layout(
        [(x.indent, x.body, x.width) for x in lines if x.kind in (TEXT, BLANK)]
    )
    return _paragraphs(lines, wrap, normal_indent)


def _book_title(front: list[_Line], prefixes: list[str]) -> tuple[str | None, str | None]:
    """(title, author) from the title page (before the first heading) and breadcrumbs."""
    title = author = None
    candidates: list[str] = []
    for line in front:
        body = line.body
        if m := _AUTHOR.search(body):
            author = author or m["author"]
        if m := _TITLE_LINE.match(body):
            candidates.insert(0, (m["title"] or m["quoted"]).strip())
        elif m := _NAME_AUTHOR.match(body):
            candidates.append(m["title"])
            author = author or m["author"]
        elif len(body) <= 20 and not re.search(r"[，。！？；：:]", body):
            candidates.append(body.strip("《》"))
    crumbs = [
        part for p in prefixes for part in re.split(r"--|——|—|-|/|>|»|\||·", p) if part.strip()
    ]
    crumbs = [c.strip() for c in crumbs if c.strip() != author]
    for candidate in candidates:  # a name both pages give wins
        if candidate in crumbs:
            return candidate, author
    if candidates:
        title = candidates[0]
    elif crumbs:
        title = Counter(crumbs).most_common(1)[0][0]
    return title, author


def _text_chars(lines: list[_Line]) -> int:
    return sum(len(x.body) for x in lines if x.kind == TEXT)


def _span(lines: list[_Line]) -> tuple[int, int]:
    return lines[0].number, lines[-1].number


def _notice_sections(lines: list[_Line], where: str) -> list[Section]:
    """Site notices among lines outside the chapters: runs of ad lines, with the rules
    and blank lines between them."""
    sections, run = [], []
    for line in [*lines, None]:
        if line is not None and line.kind in (AD, RULE, BLANK):
            run.append(line)
            continue
        ads = [x for x in run if x.kind == AD]
        if ads:
            marked = [x for x in run if x.kind != BLANK]
            first, last = _span(marked)
            chars = sum(len(x.body) for x in ads)
            reason = f"download-site notice {where}: {len(ads)} lines, {chars} chars dropped"
            sections.append(Section("site notice", "", first, last, chars, False, reason))
        run = []
    return sections


def _trailing_notice(body: list[_Line]) -> int:
    """Where the site notice at the end of the last chapter starts (len(body) if none)."""
    cut = len(body)
    while cut and body[cut - 1].kind in _NOT_TEXT:
        cut -= 1
    tail = body[cut:]
    return cut if any(x.kind == AD for x in tail) else len(body)


def split_novel(
    text: str, untitled_number: int | None = None, *, keep_extras: bool = False
) -> Novel:
    """Clean text -> the novel's chapters in order, and a record of every part.

    Chapters (and a prologue 楔子 or epilogue 尾声) become chapters; a chapter number seen
    again is kept once. Prefaces, appendices, afterwords and the untitled front matter
    become chapters only with `keep_extras`; site notices and the table of contents never.
    Text with no chapter heading at all (one chapter per file) becomes chapter
    `untitled_number` when that is given, titled by its first line if that is short.
    """
    removed = Removed()
    _count_dropped_chars(text, removed)
    lines = _classify(prepare_text(text))
    _mark_notice_blocks(lines)
    _merge_headings(lines, removed)
    _choose_unit(lines)
    heads = [i for i, x in enumerate(lines) if x.kind == HEADING]
    entries = _contents_entries(lines, heads)
    for k in entries:
        lines[heads[k]].kind = CONTENTS
    wrap, normal_indent = _layout(
        [(x.indent, x.body, x.width) for x in lines if x.kind in (TEXT, BLANK)]
    )
    starts = [i for k, i in enumerate(heads) if k not in entries]
    sections = _contents_sections(lines, heads, entries)
    front = lines[: starts[0]] if starts else lines
    title, author = _book_title(
        [x for x in front if x.kind == TEXT], [lines[i].heading.prefix for i in heads]
    )
    novel = Novel([], sections, removed, title, author)
    chapter_starts = [i for i in starts if lines[i].heading.level == "chapter"]
    if not chapter_starts and untitled_number is not None:
        _one_chapter(novel, lines, untitled_number, wrap, normal_indent)
        _count_removed(lines, novel.sections, removed)
        return novel
    novel.sections.extend(_notice_sections(front, "before the first chapter"))
    front_text = [x for x in front if x.kind == TEXT]
    if front_text:
        first, last = _span(front_text)
        chars = _text_chars(front_text)
        part = Section("front matter", "", first, last, chars, keep_extras)
        part.reason = "title page and untitled text before the first heading"
        if not keep_extras:
            part.reason += f": {chars} chars dropped"
        novel.sections.append(part)
        if keep_extras:
            body = _paragraphs(front, wrap, normal_indent)
            novel.chapters.append(Chapter(None, "", "", "\n".join(body), kind="front matter"))
    _chapters(novel, lines, starts, wrap, normal_indent, keep_extras)
    novel.sections.sort(key=lambda s: s.first_line)
    _count_removed(lines, novel.sections, removed)
    return novel


def _contents_sections(lines: list[_Line], heads: list[int], entries: set[int]) -> list[Section]:
    """One section per run of consecutive table-of-contents entries."""
    sections = []
    runs: list[list[int]] = []
    for k in sorted(entries):
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    for run in runs:
        rows = [lines[heads[k]] for k in run]
        chars = sum(len(x.body) for x in rows)
        first, last = rows[0].number, rows[-1].number
        if len(run) > 1:
            reason = f"table of contents: {len(run)} entries dropped"
            sections.append(Section("contents", "", first, last, chars, False, reason))
        else:
            h = rows[0].heading
            kind = "chapter" if h.level == "chapter" else h.unit
            reason = "no text under the heading"
            sections.append(Section(kind, h.line, first, last, 0, False, reason))
    return sections


def _one_chapter(novel: Novel, lines: list[_Line], number: int, wrap, normal_indent) -> None:
    body = _paragraphs(lines, wrap, normal_indent)
    if not body:
        return
    first = body[0] if len(body) > 1 and len(body[0]) <= _MAX_HEADING_CHARS else ""
    text = unicodedata.normalize("NFC", "\n".join(body))
    novel.chapters.append(Chapter(number, first, first, text, count_pua(text)))
    a, b = _span([x for x in lines if x.kind != BLANK])  # body is not empty: neither is this
    novel.sections.append(Section("chapter", first, a, b, len(text), True))


_EXTRAS = frozenset({"preface", "appendix", "afterword", "contents"})


def _chapters(novel: Novel, lines, starts, wrap, normal_indent, keep_extras) -> None:
    """Cut the text at each heading; record each part, make chapters of those kept."""
    # Chapter numbers that start again under each volume are told apart by the volume.
    numbers, restart, volume_seen = [], False, False
    for i in starts:
        h = lines[i].heading
        if h.level == "volume":
            volume_seen = True
        elif h.level == "chapter":
            restart = restart or (volume_seen and bool(numbers) and h.number <= numbers[-1])
            numbers.append(h.number)
    seen: dict[tuple, Chapter] = {}
    volume: Heading | None = None
    volumes = 0
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        h = lines[start].heading
        body = lines[start + 1 : end]
        if end == len(lines):  # the site notice after the last chapter
            cut = _trailing_notice(body)
            novel.sections.extend(_notice_sections(body[cut:], "after the last chapter"))
            body = body[:cut]
        chars = _text_chars(body)
        first, last = lines[start].number, (body[-1].number if body else lines[start].number)
        if h.level == "volume":
            volume, volumes = h, volumes + 1
            if chars:
                reason = f"text under a volume heading: {chars} chars dropped"
                novel.sections.append(Section("volume", h.line, first, last, chars, False, reason))
            continue
        kind = "chapter" if h.level == "chapter" else h.unit
        section = Section(kind, h.line, first, last, chars, True)
        novel.sections.append(section)
        if kind == "contents" or (kind in _EXTRAS and not keep_extras):
            section.kept = False
            section.reason = f"{kind}: {chars} chars dropped"
            continue
        paras = _paragraphs(body, wrap, normal_indent)
        if not paras:
            section.kept, section.reason = False, "no text under the heading"
            continue
        text = unicodedata.normalize("NFC", "\n".join([h.line, *paras]))
        number = h.number if h.level == "chapter" else None
        chapter = Chapter(
            number, h.line, h.title, text, count_pua(text), kind, volume.line if volume else None
        )
        if h.level == "chapter":
            key = (volumes if restart else 0, h.number)
            if key in seen:
                same = "identical" if seen[key].text == text else "different"
                section.kept = False
                section.reason = f"chapter {h.number} appears again ({same} text); kept once"
                continue
            seen[key] = chapter
        section.chars = len(text)
        novel.chapters.append(chapter)


# Rules for the text lines of a part left out, by the part's kind (Section.kind).
_DROPPED_PART = {
    "contents": "table of contents",
    "front matter": "title page and front matter",
    "preface": "preface (--option keep_extras=true keeps it)",
    "appendix": "appendix (--option keep_extras=true keeps it)",
    "afterword": "afterword (--option keep_extras=true keeps it)",
    "volume": "text under a volume heading",
}


def _count_removed(lines: list[_Line], sections: list[Section], removed: Removed) -> None:
    """Count every line no chapter took, by the rule that left it out: noise lines by
    their kind, then the text and heading lines of each part dropped whole."""
    for line in lines:
        if line.kind == RULE:
            removed.add("separator or page number", line.body)
        elif line.kind == HEADER:
            removed.add("running page header", line.body)
        elif line.kind == AD:
            removed.add("site notice or ad", line.body)
        elif line.kind == CONTENTS:
            removed.add("table of contents", line.body)
    for section in sections:
        if section.kept:
            continue
        if section.kind in _DROPPED_PART:
            rule = _DROPPED_PART[section.kind]
        elif "appears again" in section.reason:
            rule = "repeated chapter (kept once)"
        else:
            rule = "heading with no text under it"
        for line in lines[section.first_line - 1 : section.last_line]:
            if line.kind in (TEXT, HEADING):  # noise and contents lines are counted above
                removed.add(rule, line.body)


def _count_dropped_chars(text: str, removed: Removed) -> None:
    """Control, zero-width and replacement characters prepare_text drops, within lines
    (line ends are made LF first: a CR of a CRLF file is not a dropped character)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for char, times in Counter(_DROP_CHARS.findall(text)).items():
        rule = "control or invisible character"
        removed.add(rule, f"U+{ord(char):04X}", lines=0, chars=times)


@functools.cache
def _opencc(config: str):
    import opencc  # only for the optional conversion

    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese with OpenCC (phrase-aware, not char by char)."""
    return _opencc("t2s").convert(text)
