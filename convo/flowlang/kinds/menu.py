"""``menu:``: a title and numbered options (``options:``), or one option per item of a list
(``choose:``); the caller answers with a number."""
from __future__ import annotations

from convo.actions.shapes import ANY, Seq
from convo.flowlang.kinds import Kind, register
from convo.flowlang.spec import Choose, Option, is_text, line_of


def menu_number(raw: str) -> int:
    """A menu answer as a number: ASCII digits only (``"١"``, ``"１"`` and ``"²"`` pass
    ``str.isdigit`` but are not what the screen offered), at most 3 digits; else 0."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else 0


def visible_options(cf, st, tctx: dict) -> list[int]:
    """The 1-based indexes of the options shown now (those whose ``when:`` holds)."""
    out = []
    for i, _ in enumerate(st.options, 1):
        cond = cf.conditions.get((st.name, i))
        if cond is None or cond(**tctx):
            out.append(i)
    return out


@register
class Menu(Kind):
    key = "menu"
    keys = frozenset({"options", "choose", "error"})
    waits_for_input = True
    invalid_text = "common.invalid_choice"

    def parse(self, st, p):
        d, line = p.d, p.line
        st.text = p.text("menu")
        st.error = p.text("error", required=False)
        opts, choose = d.get("options"), d.get("choose")
        if (opts is None) == (choose is None):
            p.error(line, "a menu needs either 'options:' (a list) or 'choose:' (a list from data)")
        if opts is not None:
            if not isinstance(opts, list) or not opts:
                p.error(p.line_of("options"), "'options:' must be a non-empty list")
            else:
                for i, o in enumerate(opts):
                    oline = opts.item_lines[i] if hasattr(opts, "item_lines") else line
                    if (not isinstance(o, dict) or set(o) - {"label", "next", "when"}
                            or "label" not in o or "next" not in o):
                        p.error(oline, f"option {i + 1} needs 'label:' and 'next:' (and optionally 'when:')")
                        continue
                    if not is_text(o["label"]) or not isinstance(o["next"], str):
                        p.error(oline, f"option {i + 1}: 'label' must be text and 'next' a state name")
                        continue
                    when = o.get("when")
                    if when is not None and not isinstance(when, str):
                        p.error(oline, f"option {i + 1}: 'when' must be a condition")
                        continue
                    st.options.append(Option(o["label"], o["next"], when, line_of(o, "next", oline)))
        if choose is not None:
            cline = p.line_of("choose")
            req = {"from", "label", "save", "next"}
            if not isinstance(choose, dict) or set(choose) != req:
                p.error(cline, "'choose:' needs exactly 'from:', 'label:', 'save:' and 'next:'")
            elif not all(isinstance(choose[k], str) for k in ("from", "save", "next")) or not is_text(choose["label"]):
                p.error(cline, "'choose:' values: from/save are variable names, next a state, label a text")
            else:
                st.choose = Choose(choose["from"], choose["label"], choose["save"], choose["next"], cline)

    def compile(self, st, b):
        for i, o in enumerate(st.options, 1):
            b.text(st, f"opt{i}", o.label, o.line)
            if o.when:
                c = b.cond(st, o.when, o.line)
                if c:
                    b.conditions[(st.name, i)] = c
            b.transition(f"opt{i}", st.name, o.next)
        if st.choose:
            b.text(st, "choose", st.choose.label, st.choose.line)
            b.transition("choose", st.name, st.choose.next, before="save")

    def var_edges(self, st, env, flow):
        for o in st.options:
            yield o.next, env
        if st.choose:
            src = env.get(st.choose.source)
            item = src.item if isinstance(src, Seq) else ANY
            yield st.choose.next, {**env, st.choose.save: item}

    def sets(self, st, actions):
        return [(st.choose.save, f"the choice in state '{st.name}'", st.choose.line)] if st.choose else []

    def feed(self, turn, cf, st, raw):
        tctx = turn.tctx()
        n = menu_number(raw)
        if st.choose:
            items = turn.conv.vars.get(st.choose.source) or []
            if not 1 <= n <= len(items):
                return turn.error(cf, st)
            turn.fire(cf, "choose", var=st.choose.save, value=items[n - 1], ctx=tctx)
        else:
            visible = visible_options(cf, st, tctx)
            if not 1 <= n <= len(visible):
                return turn.error(cf, st)
            turn.fire(cf, f"opt{visible[n - 1]}", ctx=tctx)
        return None

    def render(self, screen, cf, st):
        tctx, lang = screen.tctx, screen.lang
        if st.choose:
            label = cf.texts[(st.name, "choose")]
            items = screen.conv.vars.get(st.choose.source) or []
            lines = [f"{i}. {label.render(lang, {**tctx, 'item': it})}" for i, it in enumerate(items, 1)]
        else:
            lines = [f"{n}. {cf.texts[(st.name, f'opt{i}')].render(lang, tctx)}"
                     for n, i in enumerate(visible_options(cf, st, tctx), 1)]
        return screen.menu_pages(lines)
