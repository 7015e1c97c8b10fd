"""Which variables every state of every flow can use, and whether its texts use only those.

Each action declares what it puts into the conversation (``provides=`` in
:func:`convo.actions.action`), ``ask``/``choose`` states add their ``save:``,
``flow:`` states their ``with:``, and a sub-flow hands back what it set on every
path to its ``return:``. From these :func:`analyse` computes, for every state,
the variables set on *every* path into it (a must-analysis: the meet of all
paths is the intersection), with their shapes.

:func:`check_template` then reads a Jinja text, condition or ``with:`` value
and reports each name or attribute that is not there, with a suggestion
("did you mean `client.first_name`?"). :func:`example_context` builds typed,
long example values from the same shapes, so every text is rendered at load in
every language (filters and their arguments run for real) and its worst-case
length on a USSD screen is known.

Shapes are defined in :mod:`convo.actions.shapes`.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, overload

import jinja2
from jinja2 import nodes

from convo.actions.shapes import ANY, Leaf, Obj, Seq, Shape, example_of

# --------------------------------------------------------------------------- variables per state

Env = dict  # variable -> shape; None stands for "not reached yet" (the top of the lattice)
#: in an Env: an action without a declaration ran on every path here, so any name may be set
OPEN = "*"


@overload
def _meet(a: Env, b: Env) -> Env: ...
@overload
def _meet(a: Env | None, b: Env | None) -> Env | None: ...
def _meet(a: Env | None, b: Env | None) -> Env | None:
    if a is None:
        return None if b is None else dict(b)
    if b is None:
        return dict(a)
    return {k: v for k, v in a.items() if k in b}


@dataclass
class Origin:
    """Where a variable is set (for "used before it is set" messages)."""

    what: str           # "action 'savings_balance'", "the answer of state 'amount'", ...
    file: str
    line: int
    state: str


@dataclass
class Analysis:
    #: (flow, state) -> variables set on every path into it; absent = not reachable
    defined: dict[tuple[str, str], Env] = field(default_factory=dict)
    #: variable -> places that set it anywhere in the flow set
    origins: dict[str, list[Origin]] = field(default_factory=dict)
    entry: dict[str, Env] = field(default_factory=dict)


def analyse(specs: dict, actions: dict, roots: Iterable[str], base: Env, max_rounds: int = 50) -> Analysis:
    """Variables defined on every path into every state of every flow (``specs``: name -> FlowSpec).

    ``roots`` are flows a channel starts (with only ``base``); a flow also called as a
    sub-flow gets the meet of ``base`` and every call site. Sub-flows hand back, per
    outcome, what they set on every path to that ``return:``."""
    roots = set(roots)
    called = {st.subflow for sp in specs.values() for st in sp.states.values() if st.kind == "flow"}
    roots |= {n for n in specs if n not in called}
    entry: dict[str, Env | None] = {n: (dict(base) if n in roots else None) for n in specs}
    returns: dict[str, dict[str, Env | None]] = {n: {} for n in specs}
    defined: dict[tuple[str, str], Env] = {}
    origins = _origins(specs, actions)
    for _ in range(max_rounds):
        calls: dict[str, Env | None] = {n: None for n in specs}
        new_returns: dict[str, dict[str, Env | None]] = {n: {} for n in specs}
        for name, spec in specs.items():
            ins = _flow_pass(spec, entry[name], returns, entry, actions, calls)
            for sname, env in ins.items():
                defined[(name, sname)] = env
                st = spec.states[sname]
                if st.kind == "return" and st.outcome:
                    prev = new_returns[name].get(st.outcome, None)
                    new_returns[name][st.outcome] = env if st.outcome not in new_returns[name] else _meet(prev, env)
            for sname in spec.states:
                if sname not in ins:
                    defined.pop((name, sname), None)
        new_entry = {}
        for n in specs:
            e = dict(base) if n in roots else None
            from_calls = calls[n]
            if from_calls is not None:
                e = _meet(e, from_calls) if e is not None else dict(from_calls)
            new_entry[n] = e
        if _same_entries(new_entry, entry) and _same_returns(new_returns, returns):
            break
        entry, returns = new_entry, new_returns
    return Analysis(defined=defined, origins=origins, entry={k: v for k, v in entry.items() if v is not None})


def _same_entries(a, b) -> bool:
    return all((a[n] is None) == (b[n] is None) and (a[n] is None or a[n].keys() == b[n].keys()) for n in a)


def _same_returns(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    for n in a:
        if a[n].keys() != b[n].keys():
            return False
        for o in a[n]:
            x, y = a[n][o], b[n][o]
            if (x is None) != (y is None) or (x is not None and x.keys() != y.keys()):
                return False
    return True


def _origins(specs: dict, actions: dict) -> dict[str, list[Origin]]:
    """Every place that sets each variable (for "used before it is set" messages); what a state sets is
    its kind's ``sets`` (convo.flowlang.kinds)."""
    from convo.flowlang.kinds import kind_of

    origins: dict[str, list[Origin]] = {}
    for spec in specs.values():
        for st in spec.states.values():
            for var, what, line in kind_of(st).sets(st, actions):
                origins.setdefault(var, []).append(Origin(what, spec.file, line or st.line, st.name))
    return origins


def _flow_pass(spec, start_env: Env | None, returns, entry, actions, calls) -> dict[str, Env]:
    """Fixpoint inside one flow: state -> variables defined on entry."""
    states = spec.states
    ins: dict[str, Env] = {}
    if start_env is None or spec.start not in states:
        return ins

    ins[spec.start] = dict(start_env)
    work = [spec.start]
    while work:
        sname = work.pop()
        env = ins[sname]
        for target, out in _edges(states[sname], env, spec, returns, entry, actions, calls):
            if target not in states or out is None:
                continue
            old = ins.get(target)
            new = dict(out) if old is None else _meet(old, out)
            if old is None or new.keys() != old.keys():
                ins[target] = new
                work.append(target)
    return ins


@dataclass
class FlowPass:
    """What a kind's ``var_edges`` (convo.flowlang.kinds) sees during :func:`analyse`: the actions, and
    the sub-flows' entries and returns as known in this round."""

    actions: dict
    returns: dict                 # flow -> outcome -> Env handed back
    entry: dict                   # flow -> Env on entry (None: not known yet)
    calls: dict                   # flow -> meet of the Envs it is called with, this round

    def call(self, flow: str, env: Env) -> None:
        """A ``flow:`` state calls ``flow`` with ``env``."""
        self.calls[flow] = env if self.calls.get(flow) is None else _meet(self.calls[flow], env)

    def returned(self, flow: str, outcome: str) -> Env | None:
        """What ``flow`` sets that its caller did not give it, on every path to ``return: outcome``
        (None: not known yet, next round)."""
        ret = self.returns.get(flow, {}).get(outcome)
        if ret is None:
            return None
        sub_entry = self.entry.get(flow)
        return {k: v for k, v in ret.items() if sub_entry is None or k not in sub_entry}


def _edges(st, env: Env, spec, returns, entry, actions, calls):
    from convo.flowlang.kinds import kind_of

    return kind_of(st).var_edges(st, env, FlowPass(actions, returns, entry, calls))


# --------------------------------------------------------------------------- templates

#: names every text can use besides the conversation's variables (Jinja's own globals)
JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "true", "false",
                           "none", "True", "False", "None"})
_SEQ_FILTERS = {"list", "sort", "reverse", "select", "reject", "selectattr", "rejectattr", "unique", "batch",
                "slice"}
_ITEM_FILTERS = {"first", "last", "random", "min", "max"}


def _ref(node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_ref(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return f"{_ref(node.node)}[{node.arg.value!r}]"
    return "(...)"


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return m[0] if m else None


class Problem(str):
    """A problem found in one text; ``.undefined`` names a missing variable (for "used before it is set")."""

    undefined: str | None = None


class _Walker:
    def __init__(self, env: Env, extra_globals: Iterable[str] = (), origins: dict | None = None,
                 secret_ok: bool = False, prefer: tuple = ()):
        self.env = env
        self.prefer = prefer
        self.globals = JINJA_GLOBALS | set(extra_globals)
        self.scopes: list[dict[str, Shape]] = []
        self.problems: list[Problem] = []
        self.origins = origins or {}
        self.secret_ok = secret_ok

    def report(self, msg: str, undefined: str | None = None) -> None:
        p = Problem(msg)
        p.undefined = undefined
        if p not in self.problems:
            self.problems.append(p)

    def lookup(self, name: str) -> Shape | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.env:
            return self.env[name]
        if name in self.globals or OPEN in self.env:
            return ANY
        return None

    def visible(self) -> set[str]:
        out = set(self.env)
        for s in self.scopes:
            out |= set(s)
        return out

    # expressions -> shape
    def expr(self, node, quiet: bool = False) -> Shape:
        if isinstance(node, nodes.Name):
            shape = self.lookup(node.name)
            if shape is None:
                if not quiet:
                    self._undefined(node.name)
                return ANY
            if isinstance(shape, Leaf) and shape.type == "secret" and not self.secret_ok and not quiet:
                self.report(f"`{node.name}` is a PIN: a text never shows it (it is not kept after the next step)")
            return shape
        if isinstance(node, nodes.Getattr):
            return self.attr(self.expr(node.node, quiet), node.attr, node.node, quiet)
        if isinstance(node, nodes.Getitem):
            base = self.expr(node.node, quiet)
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                return self.attr(base, node.arg.value, node.node, quiet)
            self.expr(node.arg, quiet)
            if isinstance(base, Seq) and isinstance(node.arg, nodes.Const):
                return base.item
            return ANY
        if isinstance(node, nodes.Filter):
            quiet_base = quiet or node.name in ("default", "d")
            base = self.expr(node.node, quiet_base) if node.node is not None else ANY
            self._args(node, quiet)
            if node.name in _SEQ_FILTERS and isinstance(base, Seq):
                return base
            if node.name in _ITEM_FILTERS and isinstance(base, Seq):
                return base.item
            return ANY
        if isinstance(node, nodes.Test):
            self.expr(node.node, quiet or node.name in ("defined", "undefined", "none"))
            self._args(node, quiet)
            return ANY
        if isinstance(node, nodes.CondExpr):
            self.expr(node.test, quiet)
            a = self.expr(node.expr1, quiet)
            if node.expr2 is not None:
                self.expr(node.expr2, quiet)
            return a
        for child in node.iter_child_nodes():
            self.visit(child, quiet)
        return ANY

    def _args(self, node, quiet: bool) -> None:
        for a in node.args:
            self.expr(a, quiet)
        for kw in node.kwargs:
            self.expr(kw.value, quiet)
        for x in (node.dyn_args, node.dyn_kwargs):
            if x is not None:
                self.expr(x, quiet)

    def attr(self, base: Shape, name: str, base_node, quiet: bool) -> Shape:
        ref = f"{_ref(base_node)}.{name}"
        if isinstance(base, Obj):
            if name in base.fields:
                return base.fields[name]
            if not quiet:
                hint = _suggest(name, base.fields)
                self.report(f"`{ref}` is not defined" +
                            (f"; did you mean `{_ref(base_node)}.{hint}`?" if hint else
                             f" (`{_ref(base_node)}` has: {', '.join(base.fields)})"))
            return ANY
        if isinstance(base, Leaf):
            if hasattr(str, name) or base.type == "any":
                return ANY
            if not quiet:
                self.report(f"`{ref}` is not defined: `{_ref(base_node)}` is a single value ({base.describe()}), "
                            "it has no attributes")
            return ANY
        if isinstance(base, Seq):
            if not hasattr(list, name) and not quiet:
                self.report(f"`{ref}` is not defined: `{_ref(base_node)}` is a list "
                            f"(use `{{% for x in {_ref(base_node)} %}}` and `x.{name}`)")
            return ANY
        return ANY

    def _undefined(self, name: str) -> None:
        hint = _suggest(name, self.visible())
        if name in self.origins and hint != name:
            os_ = self.origins[name]
            o = next((o for f in self.prefer for o in os_ if o.file == f), os_[0])
            self.report(f"`{name}` is used before it is set: {o.what} ({o.file}:{o.line}) sets it, "
                        "but not on every path to this state", undefined=name)
            return
        self.report(f"`{name}` is not defined here" + (f"; did you mean `{hint}`?" if hint else ""), undefined=name)

    # statements
    def visit(self, node, quiet: bool = False) -> None:
        if isinstance(node, nodes.Expr) and not isinstance(node, nodes.Pair):
            self.expr(node, quiet)
            return
        if isinstance(node, nodes.For):
            it = self.expr(node.iter, quiet)
            scope: dict[str, Shape] = {"loop": ANY}
            self._bind(node.target, it.item if isinstance(it, Seq) else ANY, scope)
            self.scopes.append(scope)
            if node.test is not None:
                self.expr(node.test, quiet)
            for b in node.body:
                self.visit(b, quiet)
            self.scopes.pop()
            for b in node.else_:
                self.visit(b, quiet)
            return
        if isinstance(node, nodes.If) and isinstance(node.test, nodes.Test) and node.test.name == "defined" \
                and isinstance(node.test.node, nodes.Name):             # {% if x is defined %}...{% endif %}
            self.scopes.append({node.test.node.name: self.lookup(node.test.node.name) or ANY})
            for b in node.body:
                self.visit(b, quiet)
            self.scopes.pop()
            for b in [*node.elif_, *node.else_]:
                self.visit(b, quiet)
            return
        if isinstance(node, nodes.Assign):
            shape = self.expr(node.node, quiet)
            if not self.scopes:
                self.scopes.append({})
            self._bind(node.target, shape, self.scopes[-1])
            return
        if isinstance(node, (nodes.Macro, nodes.CallBlock)):     # not checked inside; the macro's name is known
            if isinstance(node, nodes.Macro):
                if not self.scopes:
                    self.scopes.append({})
                self.scopes[-1][node.name] = ANY
            return
        for child in node.iter_child_nodes():
            self.visit(child, quiet)

    def _bind(self, target, shape: Shape, scope: dict) -> None:
        if isinstance(target, nodes.Name):
            scope[target.name] = shape
        else:
            for n in target.find_all(nodes.Name):
                scope[n.name] = ANY


def check_template(ast: nodes.Template, env: Env, *, extra_globals: Iterable[str] = (),
                   origins: dict | None = None, prefer: tuple = ()) -> list[Problem]:
    """Problems of one parsed template against the variables ``env`` (name -> shape); ``prefer``:
    files whose places that set a missing variable are named first (the flow, then its sub-flows)."""
    w = _Walker(env, extra_globals, origins, prefer=prefer)
    for n in ast.body:
        w.visit(n)
    return w.problems


def example_context(env: Env, lang: str, null: bool = False) -> dict:
    """Example values for every variable of ``env`` (long ones; ``null``: nullable ones None)."""
    ctx = {k: example_of(v, null) for k, v in env.items()}
    ctx["lang"] = lang
    return ctx


def env_signature(env: Env) -> tuple:
    return tuple(sorted((k, id(v)) for k, v in env.items()))


# --------------------------------------------------------------------------- lint of every text at its state

USSD_LIMIT, USSD_PREFIX = 160, 4


class TextLint:
    """Checks every text, condition and ``with:`` value of compiled flows at the states that use them.

    Static check of names and attributes (:func:`check_template`), then a real rendering of each
    text in each language with long and with null example values, then the worst-case USSD screens
    of ``menu`` and ``ask`` states. Findings are :class:`convo.flowlang.spec.FlowError` with ``key``,
    ``lang`` and ``severity``; each (text, language, problem) is reported once."""

    def __init__(self, specs, flows, actions, locales, jenv, analysis: Analysis, common, languages):
        from convo.flowlang.spec import FlowError, Where

        self.FlowError, self.Where = FlowError, Where
        self.specs, self.flows, self.actions = specs, flows, actions
        self.locales, self.jenv, self.an, self.common = locales, jenv, analysis, common
        self.langs = languages or ("en",)
        self.errors: list = []
        self.warnings: list = []
        self._seen: set = set()
        self._asts: dict[str, Any] = {}
        self._static: dict = {}
        self._rendered: dict = {}
        self._exprs: dict[str, Any] = {}
        self._contexts: dict = {}
        self.nav = {l: (f"98. {self._common('common.more', l)}", f"0. {self._common('common.back', l)}")
                    for l in self.langs}

    def _common(self, key: str, lang: str) -> str:
        t = self.common.get(key)
        try:
            return t.render(lang, {"lang": lang}) if t else key
        except Exception:  # noqa: BLE001 - reported where the text is checked
            return key

    # ---- reporting
    def _add(self, severity: str, file: str, line: int, state: str | None, message: str,
             key: str | None = None, lang: str | None = None, dedupe: tuple | None = None) -> None:
        d = dedupe or (file, line, key, lang, message)
        if d in self._seen:
            return
        self._seen.add(d)
        e = self.FlowError(self.Where(file, line, state), message, key=key, lang=lang, severity=severity)
        (self.errors if severity == "error" else self.warnings).append(e)

    def _text_where(self, text, lang: str, spec, st, line: int) -> tuple[str, int, str]:
        """(file, line, label) of a text in ``lang``: its locale line, or the flow line for inline text."""
        if text.key:
            lg = lang if self.locales.has(lang, text.key) else "en"
            file, kline = self.locales.where(lg, text.key)
            return file, kline, f"text '{text.key}' ({lang}), shown by {spec.file}:{line}"
        if isinstance(text.source, dict):
            return spec.file, line, f"text ({lang})"
        return spec.file, line, "text"

    def _source(self, text, lang: str) -> str | None:
        if text.key:
            lg = lang if self.locales.has(lang, text.key) else None
            return self.locales.source(lg, text.key) if lg else None
        if isinstance(text.source, dict):
            return text.source.get(lang)
        return text.source

    def _ast(self, src: str):
        a = self._asts.get(src)
        if a is None:
            a = self._asts[src] = self.jenv.parse(src)
        return a

    # ---- one text
    def text(self, spec, st, slot: str, text, env: Env, line: int) -> dict[str, str]:
        """Check one text in every language; returns lang -> its longest rendering (if it renders)."""
        out = {}
        sig = env_signature(env)
        for lang in self.langs:
            src = self._source(text, lang)
            if src is None:
                continue
            file, tline, label = self._text_where(text, lang, spec, st, line)
            skey = (src, sig, spec.name)
            problems = self._static.get(skey)
            if problems is None:
                try:
                    problems = self._static[skey] = check_template(self._ast(src), env, origins=self.an.origins,
                                                                   prefer=self._prefer(spec))
                except jinja2.TemplateSyntaxError:
                    problems = self._static[skey] = []   # reported by the compiler
            inline = not text.key and not isinstance(text.source, dict)
            for p in problems:
                self._add("error", file, tline, st.name, f"{label}: {p}", text.key, None if inline else lang,
                          dedupe=(file, tline, None if inline else lang, str(p)))
            if problems:
                continue
            tpl = text.templates.get(lang)
            if tpl is None or OPEN in env or any(v is ANY for v in env.values()):
                continue                         # nothing typed to render with: the static check is all

            rkey = (id(tpl), sig, lang)
            if rkey not in self._rendered:
                self._rendered[rkey] = self._render(tpl, functools.partial(self._examples, env, sig, lang))
            long, err = self._rendered[rkey]
            if err:
                inline = not text.key and not isinstance(text.source, dict)
                self._add("error", file, tline, st.name,
                          f"{label}: cannot be shown with example values of its variables: {err}", text.key,
                          None if inline else lang, dedupe=(file, tline, None if inline else lang, err))
            elif long is not None:
                out[lang] = long
        return out

    def _examples(self, env: Env, sig: tuple, lang: str, null: bool) -> dict:
        key = (sig, lang, null)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = example_context(env, lang, null)
        return ctx

    @staticmethod
    def _render(tpl, examples) -> tuple[str | None, str | None]:
        if isinstance(tpl, str):
            return tpl, None
        long = None
        for null in (False, True):
            try:
                r = tpl.render(examples(null)).strip()
            except Exception as e:  # noqa: BLE001 - every failure is a load error
                what = "with null values where a variable may be null, " if null else ""
                return None, f"{what}{type(e).__name__}: {e}"
            if not null:
                long = r
        return long, None

    def expression(self, spec, st, what: str, src: str, env: Env, line: int) -> None:
        try:
            ast = self._ast("{{ " + src + " }}")
        except jinja2.TemplateSyntaxError:
            return                                   # reported by the compiler
        problems = check_template(ast, env, origins=self.an.origins, prefer=self._prefer(spec))
        for p in problems:
            self._add("error", spec.file, line, st.name, f"{what} {src!r}: {p}", dedupe=(spec.file, line, str(p)))
        if problems:
            return
        fn = self._exprs.get(src)
        if fn is None:
            try:
                fn = self._exprs[src] = self.jenv.compile_expression(src, undefined_to_none=False)
            except Exception:  # noqa: BLE001 - reported by the compiler
                return
        sig = env_signature(env)
        for null in (False, True):
            try:
                fn(**self._examples(env, sig, self.langs[0], null))
            except Exception as e:  # noqa: BLE001
                self._add("error", spec.file, line, st.name,
                          f"{what} {src!r} cannot be evaluated with example values: {type(e).__name__}: {e}")
                return

    # ---- the whole flow set
    def run(self) -> None:
        self.common_texts()
        for name, spec in self.specs.items():
            cf = self.flows.get(name)
            for st in spec.states.values():
                env = self.an.defined.get((name, st.name))
                if env is None:
                    continue
                self.state(spec, cf, st, env)

    def common_texts(self) -> None:
        """The engine's own texts (``common.*``, ``security.rate_limited``) see only ``lang`` and ``features``."""
        base = {"lang": Leaf("lang"), "features": ANY}
        for key, text in self.common.items():
            if key == "sms.reply_number" or not text.key:
                continue
            for lang in self.langs:
                if not self.locales.has(lang, key):
                    continue
                file, line = self.locales.where(lang, key)
                try:
                    problems = check_template(self._ast(self.locales.source(lang, key)), base)
                except jinja2.TemplateSyntaxError:
                    continue
                for p in problems:
                    self._add("error", file, line, None, f"text '{key}' ({lang}), shown by the engine itself "
                              f"(it has only `lang`): {p}", key, lang)
                tpl = text.templates.get(lang)
                if not problems and tpl is not None and not isinstance(tpl, str):
                    try:
                        tpl.render({"lang": lang})
                    except Exception as e:  # noqa: BLE001
                        self._add("error", file, line, None, f"text '{key}' ({lang}) cannot be shown: "
                                  f"{type(e).__name__}: {e}", key, lang)

    def state(self, spec, cf, st, env: Env) -> None:
        from convo.flowlang.kinds import kind_of

        texts = cf.texts if cf is not None else {}
        if st.kind == "do":
            a = self.actions.get(st.action)
            if a is not None:
                if not a.declared:
                    self._add("warning", spec.file, st.line, st.name,
                              f"action '{a.name}' does not declare the variables it sets (provides=): "
                              "texts after it cannot be checked")
                for var in a.needs:
                    if var not in env and OPEN not in env:
                        self._add("error", spec.file, st.line, st.name,
                                  f"action '{a.name}' reads `{var}`, which is not set on every path to this state"
                                  + self._origin_hint(var))
        for k, v in st.params.items():
            if isinstance(v, str) and "{" in v:
                try:
                    ast = self._ast(v)
                except jinja2.TemplateSyntaxError:
                    continue
                for p in check_template(ast, env, origins=self.an.origins, prefer=self._prefer(spec)):
                    self._add("error", spec.file, st.line, st.name, f"'with:' value {k}: {p}")
        if st.kind == "menu" and st.choose and st.choose.source not in env and OPEN not in env:
            self._add("error", spec.file, st.choose.line, st.name,
                      f"'choose: from: {st.choose.source}': `{st.choose.source}` is not set on every path to this "
                      "state" + self._origin_hint(st.choose.source))
        for i, o in enumerate(st.options, 1):
            if o.when:
                self.expression(spec, st, f"option {i} 'when:'", o.when, env, o.line)
        for c in st.routes:
            if c.when is not None:
                self.expression(spec, st, "route 'if:'", c.when, env, c.line)
        main = texts.get((st.name, "text"))
        long_main = self.text(spec, st, "text", main, env, st.line) if main else {}
        err_text = texts.get((st.name, "error"))
        long_err = self.text(spec, st, "error", err_text, env, st.line) if err_text else {}
        kind = kind_of(st)
        if not err_text and kind.waits_for_input:          # an answer it refuses shows its kind's common text
            long_err = {l: self._common(kind.invalid_text, l) for l in self.langs}
        options: dict[str, list[tuple[int, str, Any, str]]] = {l: [] for l in self.langs}
        for i, o in enumerate(st.options, 1):
            t = texts.get((st.name, f"opt{i}"))
            if t is None:
                continue
            for lang, s in self.text(spec, st, f"opt{i}", t, env, o.line).items():
                options[lang].append((o.line, f"{i}. {s}", t, f"option {i}"))
        if st.choose and (st.name, "choose") in texts:
            src = env.get(st.choose.source)
            item_env = {**env, "item": src.item if isinstance(src, Seq) else ANY}
            t = texts[(st.name, "choose")]
            for lang, s in self.text(spec, st, "choose", t, item_env, st.choose.line).items():
                options[lang].append((st.choose.line, f"10. {s}", t, "each choice"))
        if st.kind == "menu":
            self._menu_fit(spec, st, main, long_main, long_err, options)
        elif st.kind == "ask":
            self._ask_fit(spec, st, main, long_main, long_err)

    def _prefer(self, spec) -> tuple:
        subs = [self.specs[st.subflow].file for st in spec.states.values()
                if st.kind == "flow" and st.subflow in self.specs]
        return (spec.file, *subs)

    def _origin_hint(self, var: str) -> str:
        origins = self.an.origins.get(var)
        o = origins[0] if origins else None
        return f" ({o.what}, {o.file}:{o.line}, sets it)" if o else ""

    # ---- screens
    def _menu_fit(self, spec, st, title, long_title, long_err, options) -> None:
        budget = USSD_LIMIT - USSD_PREFIX
        for lang in self.langs:
            more, back = self.nav[lang]
            cap = budget - len(more) - len(back) - 2
            lines = [l for _, l, _, _ in options[lang]]
            for line, text_line, t, what in options[lang]:
                if len(text_line) > cap:
                    file, tline, _ = self._where_of(t, lang, spec, st, line)
                    self._add("error", file, tline, st.name,
                              f"{what} is {len(text_line)} characters in {lang} with long example values: it cannot "
                              f"fit one USSD screen beside '{back}' and '{more}' (at most {cap}); shorten it",
                              t.key, lang, dedupe=None if t.key else (file, tline, what, "too long"))
            if title is None or lang not in long_title:
                continue
            for err in (None, long_err.get(lang) or None):
                # as the engine shows it: after an invalid answer the error comes first and the title
                # is left out when it would push the options off the first screen
                pages = _paginate_menu(long_title[lang], lines, more, back, err)
                shown = [p.split("\n") for p in pages]
                for line, text_line, t, what in options[lang]:
                    if len(text_line) <= cap and not any(text_line in p for p in shown):
                        when = " after an invalid answer" if err else ""
                        self._add("warning", *self._where_of(t, lang, spec, st, line),
                                  f"{what} ({len(text_line)} characters in {lang}) is cut on the USSD screen{when} "
                                  "with long example values", t.key, lang)
            if lines and len(long_title[lang]) > budget - len(more) - 1:
                n = len(long_title[lang])
                self._add("warning", *self._where_of(title, lang, spec, st, st.line),
                          f"the menu title is {n} characters in {lang} with long example values: it is split over "
                          f"USSD screens and the options start on screen 2 (at most {budget - len(more) - 1} fit "
                          f"beside '{more}')", title.key, lang, dedupe=self._inline_once(title, spec, st, "title"))

    def _ask_fit(self, spec, st, prompt, long_prompt, long_err) -> None:
        budget = USSD_LIMIT - USSD_PREFIX
        for lang in self.langs:
            if prompt is None or lang not in long_prompt:
                continue
            p = long_prompt[lang]
            if len(p) > budget:
                self._add("warning", *self._where_of(prompt, lang, spec, st, st.line),
                          f"the question is {len(p)} characters in {lang} with long example values: it is split "
                          f"over USSD screens (at most {budget})", prompt.key, lang,
                          dedupe=self._inline_once(prompt, spec, st, "split"))
                continue
            err = long_err.get(lang)
            if not err:
                continue
            # as the engine shows it: the error first, then the question, leaving out the question's
            # first lines (just read) so that its last line stays on the first screen
            question = p.rstrip().split("\n")[-1]
            first = _paginate_text(p, self.nav[lang][0], self.nav[lang][1], err)[0].split("\n")
            if question not in first:
                self._add("warning", *self._where_of(prompt, lang, spec, st, st.line),
                          f"after an invalid answer the error line ({len(err)}) and the question's last line "
                          f"({len(question)}) do not fit one screen in {lang} with long example values: the "
                          f"question moves to screen 2 behind '{self.nav[lang][0]}' (at most {budget}); shorten "
                          "one of them, or end the text with a short question on its own line",
                          prompt.key, lang, dedupe=self._inline_once(prompt, spec, st, "moved"))

    @staticmethod
    def _inline_once(text, spec, st, what: str) -> tuple | None:
        """An inline text is the same in every language: report it once, not once per language."""
        return None if text.key or isinstance(text.source, dict) else (spec.file, st.name, what)

    def _where_of(self, text, lang, spec, st, line) -> tuple[str, int, str]:
        file, tline, _ = self._text_where(text, lang, spec, st, line)
        return file, tline, st.name


def _paginate_menu(title: str, lines: list[str], more: str, back: str, error: str | None = None) -> list[str]:
    from convo.text.paging import paginate_menu

    try:
        return paginate_menu(title, lines, limit=USSD_LIMIT, more_label=more, back_label=back, error=error)
    except ValueError:
        return [title]


def _paginate_text(text: str, more: str, back: str, error: str | None = None) -> list[str]:
    from convo.text.paging import paginate_text

    try:
        return paginate_text(text, limit=USSD_LIMIT, more_label=more, back_label=back, error=error)
    except ValueError:
        return [text]
