"""A text key one language lacks: named in that language's file, beside the line it should mirror."""
from __future__ import annotations

from convo.flowlang.checks import Loaded, set_check
from convo.flowlang.spec import FlowError, Where


@set_check
def missing_texts(fs: Loaded, errors: list[FlowError], warnings: list[FlowError]) -> None:
    locales, key_usage = fs.locales, fs.key_usage
    for lang, key, file, line in locales.missing():
        owner = next(l for l in locales.languages if locales.has(l, key))
        used = key_usage.get(key)
        at = f"; used by {used.file}:{used.line}" if used else ""
        errors.append(FlowError(Where(locales.file(lang), locales.insertion_line(lang, key, owner),
                                      used.state if used else None),
                                f"text '{key}' is missing from the '{lang}' locale ({locales.file(lang)}); "
                                f"add it like {file}:{line}{at}", key=key, lang=lang))
