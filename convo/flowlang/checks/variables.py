"""Every text, condition and ``with:`` value against the variables set on every path to its state
(convo.flowlang.varcheck), each text rendered in every language with example values, USSD screens measured."""
from __future__ import annotations

import logging

from convo.flowlang import varcheck
from convo.flowlang.checks import Loaded, set_check
from convo.flowlang.keywords import KeywordTable
from convo.flowlang.spec import FlowError, Where

log = logging.getLogger("convo.flowlang.compiler")


def channel_roots(channels: dict, keywords: KeywordTable) -> set[str]:
    """Flows a channel starts afresh (USSD codes, SMS keywords, the SMS fallback)."""
    ussd = channels.get("ussd")
    if not isinstance(ussd, dict):
        ussd = {}
    roots = {ussd.get("start")} | set((ussd.get("codes") or {}).values() if isinstance(ussd.get("codes"), dict) else ())
    roots |= {kw.flow for kw in keywords.words.values()}
    if keywords.otherwise:
        roots.add(keywords.otherwise)
    return {r for r in roots if isinstance(r, str)}


@set_check
def variables(fs: Loaded, errors: list[FlowError], warnings: list[FlowError]) -> None:
    try:
        base = {"phone": varcheck.Leaf("phone"), "lang": varcheck.Leaf("lang"),
                "features": varcheck.Obj({n: varcheck.Leaf("bool") for n in fs.specs})}
        analysis = varcheck.analyse(fs.specs, fs.actions, channel_roots(fs.channels, fs.keywords), base)
        lint = varcheck.TextLint(fs.specs, fs.flows, fs.actions, fs.locales, fs.env, analysis, fs.common,
                                 fs.locales.languages)
        lint.run()
        errors.extend(lint.errors)
        warnings.extend(lint.warnings)
    except Exception as e:  # a bug in the checks must refuse the edit, never crash a hop
        log.exception("variable check failed")
        if not errors:
            errors.append(FlowError(Where(str(fs.directory.name), 1), f"the variable check failed: "
                                                                      f"{type(e).__name__}: {e}"))
