"""SMS keywords: the first word of a text picks a flow (``BAL``, ``SALIO``, ``help``...).

Declared in ``flows/channels.yaml`` under ``sms.keywords``; an alias listed
under a language also switches the reply to that language. Matching ignores
case, surrounding whitespace and trailing punctuation (``Bal.``, `` bal ``).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from convo.flowlang.spec import FlowError, FlowSpec, Where, line_of

_EDGE_PUNCT = re.compile(r"^[^\w?]+|[^\w?]+$")


@dataclass(frozen=True)
class Keyword:
    word: str
    flow: str
    lang: str | None           # the language an alias belongs to (None: the keyword itself)


@dataclass
class KeywordTable:
    words: dict[str, Keyword] = field(default_factory=dict)
    otherwise: str | None = None
    auto_replies_per_hour: int = 3

    def match(self, text: str) -> Keyword | None:
        word = first_word(text)
        return self.words.get(word) if word else None


def first_word(text: str) -> str | None:
    """The keyword candidate: first word, accents folded, upper case, edge punctuation dropped."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    parts = folded.split(None, 1)
    if not parts:
        return None
    word = _EDGE_PUNCT.sub("", parts[0]).upper()
    return word or None


def build_table(doc: Any, specs: dict[str, FlowSpec], languages: tuple[str, ...], file: str,
                errors: list[FlowError]) -> KeywordTable:
    """Validate ``sms:`` of channels.yaml into a :class:`KeywordTable` (errors appended)."""
    table = KeywordTable()
    if doc is None:
        return table
    if not isinstance(doc, dict):
        errors.append(FlowError(Where(file, line_of(doc)), "'sms:' must be a mapping with 'keywords:'"))
        return table

    def flow_ok(name: Any, line: int) -> bool:
        if not isinstance(name, str) or name not in specs:
            errors.append(FlowError(Where(file, line), f"unknown flow {name!r}"))
            return False
        if specs[name].outcomes:
            errors.append(FlowError(Where(file, line), f"flow '{name}' is started by a keyword, so it cannot "
                                                        f"'return:' (it has no caller); use 'end:'"))
            return False
        return True

    def add(word: Any, kw_flow: str, lang: str | None, line: int) -> None:
        w = first_word(str(word)) if word is not None else None
        if not w or w != str(word).strip().upper():
            errors.append(FlowError(Where(file, line), f"keyword {word!r} must be a single word"))
            return
        if w in table.words:
            errors.append(FlowError(Where(file, line), f"keyword '{w}' is used twice "
                                                        f"(also for flow '{table.words[w].flow}')"))
            return
        table.words[w] = Keyword(w, kw_flow, lang)

    keywords = doc.get("keywords") or {}
    if not isinstance(keywords, dict):
        errors.append(FlowError(Where(file, line_of(doc, "keywords")), "'keywords:' maps a word to a flow"))
        keywords = {}
    for word, spec in keywords.items():
        line = line_of(keywords, word)
        if isinstance(spec, str):
            spec = {"flow": spec}
        if not isinstance(spec, dict) or set(spec) - {"flow", "aliases"}:
            errors.append(FlowError(Where(file, line), f"keyword '{word}' needs 'flow:' (and optionally 'aliases:')"))
            continue
        if not flow_ok(spec.get("flow"), line):
            continue
        add(word, spec["flow"], None, line)
        aliases = spec.get("aliases") or {}
        if not isinstance(aliases, dict):
            errors.append(FlowError(Where(file, line), "'aliases:' maps a language to a list of words"))
            continue
        for lang, words in aliases.items():
            aline = line_of(aliases, lang, line)
            if lang not in languages:
                errors.append(FlowError(Where(file, aline), f"aliases for unknown language '{lang}' "
                                                            f"(locales: {', '.join(languages)})"))
                continue
            for w in (words if isinstance(words, list) else [words]):
                add(w, spec["flow"], lang, aline)
    other = doc.get("otherwise")
    if other is not None and flow_ok(other, line_of(doc, "otherwise")):
        table.otherwise = other
    limit = doc.get("auto_replies_per_hour", 3)
    if not isinstance(limit, int) or limit < 0:
        errors.append(FlowError(Where(file, line_of(doc, "auto_replies_per_hour")),
                                "'auto_replies_per_hour' must be a whole number"))
    else:
        table.auto_replies_per_hour = limit
    return table
