"""Flow specs -> one shared ``transitions`` machine per flow, checked as a whole.

:func:`load_flowset` reads a flows directory (flow files, ``channels.yaml``,
``locales/``), validates everything a product manager can get wrong (targets,
actions and their outcomes, sub-flows, locale keys in every language, template
syntax, reachability, dead ends, loops without input, menu lines that cannot
fit a USSD screen) and compiles it once. Every error names file, line and state.
The result, a :class:`FlowSet`, is immutable and identified by the content hash
of its files: sessions pin that version, so an edit never breaks a dialog in
flight. :class:`FlowLibrary` reloads the directory when it changes and keeps
the last good version when an edit is invalid.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from transitions import Machine

from convo.text import render

from convo.flowlang import varcheck
from convo.actions import REGISTRY, Action, load_builtin_actions
from convo.flowlang.keywords import KeywordTable, build_table
from convo.flowlang.spec import (Clause, FlowError, FlowSpec, FlowValidationError, State, Where, line_of, load_yaml,
                            parse_flow)

log = logging.getLogger(__name__)
# transitions logs every state change at INFO: far too chatty (and slow) for the hop path
logging.getLogger("transitions").setLevel(logging.WARNING)

KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
CHANNELS_FILE = "channels.yaml"
#: notification settings and alert rules, read and validated by convo.notify.messages (not flows)
NOTIFY_FILES = ("notify.yaml", "alerts.yaml")
NAV_MORE, NAV_BACK = "98", "0"


class FlowMachine(Machine):
    """A Machine whose string callbacks resolve only from its own table (never an import path)."""

    def __init__(self, *args, callables: dict[str, Callable] | None = None, **kwargs):
        self.callables = dict(callables or {})
        super().__init__(*args, **kwargs)

    @staticmethod
    def resolve_callable(func, event_data):
        if isinstance(func, str):
            try:
                return event_data.machine.callables[func]
            except KeyError:
                raise AttributeError(f"callback {func!r} is not registered") from None
        return func


def _save(event) -> None:
    """Transition callback: store the answer of an ask/choose in the conversation variables."""
    event.model.vars[event.kwargs["var"]] = event.kwargs["value"]


class Text:
    """A text compiled once per language: a locale key or an inline template."""

    __slots__ = ("templates", "source", "key")

    def __init__(self, templates: dict[str, Any], source: Any, key: str | None):
        self.templates = templates
        self.source = source
        self.key = key

    def render(self, lang: str, ctx: dict) -> str:
        tpl = self.templates.get(lang) or self.templates.get("en") or next(iter(self.templates.values()))
        return tpl if isinstance(tpl, str) else tpl.render(ctx).strip()


def _compile(env, source: str, name: str):
    """A Jinja template, or for text without Jinja syntax the text itself (rendered once, at load)."""
    if render.is_static(source):
        return source.strip()
    return render.compile_template(env, source, name=name)


@dataclass
class CompiledFlow:
    spec: FlowSpec
    machine: FlowMachine
    texts: dict[tuple[str, str], Text]                # (state, slot) -> Text; slots: text, error, opt<i>, choose
    conditions: dict[tuple[str, int], Callable]        # (state, option index) -> condition for `when`
    actions: dict[str, Action]                         # do-state -> action
    params: dict[str, dict[str, Any]]                  # do/flow state -> parameters (templates where "{{")

    def bind(self, st: State, tctx: dict) -> dict[str, Any]:
        """The state's ``with:`` parameters, templates rendered against the conversation."""
        return {k: (v.render(tctx) if hasattr(v, "render") else v) for k, v in self.params[st.name].items()}

    @property
    def name(self) -> str:
        return self.spec.name

    def state(self, name: str) -> State:
        return self.spec.states[name]


@dataclass
class FlowSet:
    version: str
    flows: dict[str, CompiledFlow]
    channels: dict
    locales: Any                                     # render.Locales
    common: dict[str, Text]                          # shared texts (navigation, errors)
    keywords: KeywordTable = field(default_factory=KeywordTable)
    files: dict[str, float] = field(default_factory=dict)
    env: Any = None
    _texts: dict = field(default_factory=dict)
    #: problems that do not stop the flows (texts cut on a USSD screen, undeclared actions): `convo lint` shows them
    warnings: list[FlowError] = field(default_factory=list)

    @property
    def languages(self) -> tuple[str, ...]:
        return self.locales.languages

    def render_text(self, key: str, lang: str, ctx: dict) -> str:
        """A locale text outside any dialog (an SMS receipt, a notice), in ``lang`` (else English)."""
        if not self.locales.has(lang, key):
            lang = "en"
        tpl = self._texts.get((lang, key))
        if tpl is None:
            tpl = self._texts[(lang, key)] = _compile(self.env, self.locales.source(lang, key), f"{lang}:{key}")
        return tpl if isinstance(tpl, str) else tpl.render({"lang": lang, **ctx}).strip()

    def entry_flow(self, channel: str, service: str | None = None) -> CompiledFlow:
        ch = self.channels.get(channel, {})
        name = (ch.get("codes") or {}).get(service) or ch.get("start")
        return self.flows[name]


# texts every flow set must define (used by the engine itself)
COMMON_KEYS = ("common.more", "common.back", "common.invalid_choice", "common.invalid_input",
               "common.expired", "common.error")
OPTIONAL_COMMON_KEYS = ("sms.reply_number", "security.rate_limited", "common.unavailable")


def _digest(directory: Path) -> tuple[str, dict[str, float], list[Path]]:
    files = sorted(p for p in directory.rglob("*.yaml")
                   if "tests" not in p.relative_to(directory).parts)
    h = hashlib.sha256()
    stamps = {}
    for p in files:
        rel = p.relative_to(directory).as_posix()
        h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
        stamps[rel] = p.stat().st_mtime_ns
    return h.hexdigest()[:16], stamps, files


def load_flowset(directory: str | Path, actions: dict[str, Action] | None = None) -> FlowSet:
    """Load, validate and compile every flow in ``directory``; raise FlowValidationError."""
    directory = Path(directory)
    actions = actions if actions is not None else load_builtin_actions()
    version, stamps, files = _digest(directory)
    errors: list[FlowError] = []

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(directory.parent))
        except ValueError:
            return str(p)

    try:
        locales = render.Locales.load(directory / "locales", display_root=directory.parent)
    except render.LocaleError as e:
        raise FlowValidationError([FlowError(Where(e.file, e.line or 1), e.message)]) from None

    specs: dict[str, FlowSpec] = {}
    broken: dict[str, str] = {}                      # flow name -> file, for flow files that do not parse
    channels_doc: dict = {}
    channels_file = directory / CHANNELS_FILE
    for p in files:
        if p.parent != directory:
            continue
        if p.name in NOTIFY_FILES:
            continue
        text = p.read_text(encoding="utf-8")
        if p.name == CHANNELS_FILE:
            try:
                channels_doc = load_yaml(text, rel(p)) or {}
            except FlowError as e:
                errors.append(e)
            continue
        try:
            spec = parse_flow(text, rel(p))
        except FlowValidationError as e:
            errors.extend(e.errors)
            m = re.search(r"(?m)^flow:\s*['\"]?([a-z][a-z0-9_]*)", text)
            broken[m.group(1) if m else p.stem] = rel(p)
            continue
        if spec.name in specs:
            errors.append(FlowError(spec.where(), f"flow '{spec.name}' is also defined in {specs[spec.name].file}"))
            continue
        specs[spec.name] = spec

    env = render.make_env()
    langs = locales.languages
    compiled_locale: dict[tuple[str, str], Any] = {}
    key_usage: dict[str, Where] = {}                 # text key -> first place a flow uses it

    def locale_template(lang: str, key: str, where: Where) -> Any:
        k = (lang, key)
        if k not in compiled_locale:
            file, line = locales.where(lang, key)
            try:
                compiled_locale[k] = _compile(env, locales.source(lang, key), f"{lang}:{key}")
            except render.TemplateError as e:
                errors.append(FlowError(Where(file, line), f"text '{key}' ({lang}): {e.message}"))
                compiled_locale[k] = None
        return compiled_locale[k]

    def compile_text(src: Any, where: Where) -> Text | None:
        if isinstance(src, dict):
            missing = [l for l in langs if l not in src]
            if missing:
                errors.append(FlowError(where, f"inline text lacks language(s): {', '.join(missing)}"))
                return None
            tpls = {}
            for lang, s in src.items():
                try:
                    tpls[lang] = _compile(env, s, f"{where}")
                except render.TemplateError as e:
                    errors.append(FlowError(where, f"template error ({lang}): {e.message}"))
                    return None
            return Text(tpls, src, None)
        if KEY_RE.match(src):
            if where.state is not None:
                key_usage.setdefault(src, where)
            missing = [l for l in langs if not locales.has(l, src)]
            if len(missing) == len(langs):
                errors.append(FlowError(where, f"unknown text key '{src}' (not in any locale file)"))
                return None
            tpls = {l: locale_template(l, src, where) for l in langs if l not in missing}
            return Text(tpls, src, src)
        try:
            tpl = _compile(env, src, str(where))
        except render.TemplateError as e:
            errors.append(FlowError(where, f"template error: {e.message}"))
            return None
        return Text({l: tpl for l in (langs or ("en",))}, src, None)

    common = {}
    for key in OPTIONAL_COMMON_KEYS:
        if locales.has("en", key):
            t = compile_text(key, Where(rel(directory / "locales"), 1))
            if t:
                common[key] = t
    for key in COMMON_KEYS:
        if not locales.has("en", key):
            errors.append(FlowError(Where(rel(directory / "locales" / "en.yaml"), 1),
                                    f"text '{key}' is required (the engine uses it)"))
        else:
            t = compile_text(key, Where(rel(directory / "locales"), 1))
            if t:
                common[key] = t

    channels = _check_channels(channels_doc, specs, rel(channels_file), errors)
    keywords = build_table(channels.get("sms"), specs, langs, rel(channels_file), errors)
    _apply_pin_settings(specs, errors)
    env.globals["features"] = _apply_enabled_settings(specs, errors)
    _check_subflow_cycles(specs, errors)

    flows: dict[str, CompiledFlow] = {}
    for spec in specs.values():
        cf = _compile_flow(spec, specs, actions, env, compile_text, errors)
        if cf:
            flows[spec.name] = cf
    _missing_texts(locales, key_usage, errors)
    warnings: list[FlowError] = []
    try:
        _check_variables(specs, flows, actions, locales, env, common, channels, keywords, errors, warnings)
    except Exception as e:  # noqa: BLE001 - a bug in the checks must refuse the edit, never crash a hop
        log.exception("variable check failed")
        if not errors:
            errors.append(FlowError(Where(str(directory.name), 1), f"the variable check failed: "
                                                                   f"{type(e).__name__}: {e}"))
    if broken:                                      # a file that does not parse is reported once, not again
        errors = [e for e in errors if e.where.file in broken.values()     # by every file that names it
                  or not any(f"flow '{n}'" in e.message for n in broken)]
    if errors:
        raise FlowValidationError(errors, warnings)
    return FlowSet(version=version, flows=flows, channels=channels, locales=locales, common=common, keywords=keywords,
                   files=stamps, env=env, warnings=warnings)


def _missing_texts(locales, key_usage: dict[str, Where], errors: list[FlowError]) -> None:
    """A key one language lacks: named in that language's file, beside the line it should mirror."""
    for lang, key, file, line in locales.missing():
        owner = next(l for l in locales.languages if locales.has(l, key))
        used = key_usage.get(key)
        at = f"; used by {used.file}:{used.line}" if used else ""
        errors.append(FlowError(Where(locales.file(lang), locales.insertion_line(lang, key, owner),
                                      used.state if used else None),
                                f"text '{key}' is missing from the '{lang}' locale ({locales.file(lang)}); "
                                f"add it like {file}:{line}{at}", key=key, lang=lang))


def channel_roots(channels: dict, keywords: KeywordTable) -> set[str]:
    """Flows a channel starts afresh (USSD codes, SMS keywords, the SMS fallback)."""
    ussd = channels.get("ussd") if isinstance(channels.get("ussd"), dict) else {}
    roots = {ussd.get("start")} | set((ussd.get("codes") or {}).values() if isinstance(ussd.get("codes"), dict) else ())
    roots |= {kw.flow for kw in keywords.words.values()}
    if keywords.otherwise:
        roots.add(keywords.otherwise)
    return {r for r in roots if isinstance(r, str)}


def _check_variables(specs, flows, actions, locales, env, common, channels, keywords, errors, warnings) -> None:
    """Every text, condition and ``with:`` value against the variables set on every path to its state
    (convo.flowlang.varcheck), each text rendered in every language with example values, USSD screens measured."""
    base = {"phone": varcheck.Leaf("phone"), "lang": varcheck.Leaf("lang"),
            "features": varcheck.Obj({n: varcheck.Leaf("bool") for n in specs})}
    analysis = varcheck.analyse(specs, actions, channel_roots(channels, keywords), base)
    lint = varcheck.TextLint(specs, flows, actions, locales, env, analysis, common, locales.languages)
    lint.run()
    errors.extend(lint.errors)
    warnings.extend(lint.warnings)


@dataclass
class LintResult:
    """Everything ``convo lint`` checks: the flows (``load_flowset``) and the notifications (convo.notify.messages)."""

    flowset: FlowSet | None
    errors: list[FlowError]
    warnings: list[FlowError]


def lint_directory(directory: str | Path, actions: dict[str, Action] | None = None) -> LintResult:
    """Load ``directory`` as the service would and run every check ``convo lint`` runs."""
    try:
        fs = load_flowset(directory, actions)
    except FlowValidationError as e:
        return LintResult(None, list(e.errors), list(e.warnings))
    from convo.notify import messages as notify

    rep = notify.lint(directory, fs.locales)     # notify.yaml, alerts.yaml, notify.* texts (variables, segments)
    for w in rep.warnings:
        w.severity = "warning"
    return LintResult(fs if not rep.errors else None, list(rep.errors), fs.warnings + list(rep.warnings))


def _check_channels(doc: Any, specs: dict[str, FlowSpec], file: str, errors: list[FlowError]) -> dict:
    if not isinstance(doc, dict):
        errors.append(FlowError(Where(file, 1), "channels.yaml must be a mapping (ussd:, sms:)"))
        return {}
    ussd = doc.get("ussd")
    if not isinstance(ussd, dict) or not isinstance(ussd.get("start"), str):
        errors.append(FlowError(Where(file, line_of(doc, "ussd")), "'ussd:' needs 'start: <flow>'"))
        return dict(doc)
    entry = [(ussd["start"], line_of(ussd, "start"))]
    codes = ussd.get("codes") or {}
    if not isinstance(codes, dict):
        errors.append(FlowError(Where(file, line_of(ussd, "codes")), "'codes:' maps a service code to a flow"))
    else:
        entry += [(f, line_of(codes, c)) for c, f in codes.items()]
    for name, line in entry:
        if name not in specs:
            errors.append(FlowError(Where(file, line), f"unknown flow '{name}'"))
        elif specs[name].outcomes:
            errors.append(FlowError(Where(file, line), f"flow '{name}' is started by a channel, so it cannot "
                                                        f"'return:' (it has no caller); use 'end:'"))
    return dict(doc)


PIN_FLOW = "confirm_pin"
PIN_STATE = "_confirm_pin"


def _apply_pin_settings(specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    """``settings: {pin_required: true}``: the flow starts by running ``confirm_pin`` (added here as the
    state ``_confirm_pin``, shown by ``convo graph``); a PIN answer must go straight to a ``do:`` state."""
    for spec in specs.values():
        for st in spec.states.values():
            if st.kind == "ask" and st.secret and st.next in spec.states and spec.states[st.next].kind != "do":
                errors.append(FlowError(spec.where(st.name), "a PIN answer is kept only until the next step: "
                                        f"'next:' must be a 'do:' state that uses it (not '{st.next}')"))
        if "pin_required" not in spec.settings:
            continue
        line = spec.line
        required = spec.settings["pin_required"]
        if not isinstance(required, bool):
            errors.append(FlowError(spec.where(line=line), "'settings: pin_required' must be true or false"))
            continue
        if not required:
            continue
        pin = specs.get(PIN_FLOW)
        if pin is None:
            errors.append(FlowError(spec.where(line=line), f"'pin_required: true' needs the flow '{PIN_FLOW}' "
                                                          f"(flows/{PIN_FLOW}.yaml)"))
            continue
        if pin.outcomes != {"ok"}:
            errors.append(FlowError(pin.where(), f"flow '{PIN_FLOW}' must return exactly 'ok' (it returns: "
                                                 f"{', '.join(sorted(pin.outcomes)) or 'nothing'})"))
            continue
        if spec.name == PIN_FLOW:
            errors.append(FlowError(spec.where(line=line), f"flow '{PIN_FLOW}' cannot itself be pin_required"))
            continue
        guard = State(name=PIN_STATE, kind="flow", line=line, subflow=PIN_FLOW, on={"ok": spec.start},
                      on_lines={"ok": line})
        spec.states = {PIN_STATE: guard, **spec.states}
        spec.start = PIN_STATE


ENABLED_STATE, DISABLED_STATE = "_enabled", "_disabled"


def _apply_enabled_settings(specs: dict[str, FlowSpec], errors: list[FlowError]) -> dict[str, bool]:
    """``settings: {enabled: false}`` turns a flow off without deleting it.

    A flow that sets ``enabled`` starts with a route (``_enabled``) on
    ``features.<flow>``; when off, the caller gets ``common.disabled``.
    Templates and conditions see ``features`` (e.g. a menu option's
    ``when: "features.repay"``). Returns the map flow -> enabled.
    """
    features = {}
    for spec in specs.values():
        value = spec.settings.get("enabled", True)
        if not isinstance(value, bool):
            errors.append(FlowError(spec.where(line=spec.line), "'settings: enabled' must be true or false"))
            value = True
        features[spec.name] = value
        if "enabled" not in spec.settings:
            continue
        guard = State(name=ENABLED_STATE, kind="route", line=spec.line)
        guard.routes = [Clause(f"features.{spec.name}", spec.start, spec.line), Clause(None, DISABLED_STATE, spec.line)]
        off = State(name=DISABLED_STATE, kind="end", line=spec.line, text="common.disabled")
        spec.states = {ENABLED_STATE: guard, **spec.states, DISABLED_STATE: off}
        spec.start = ENABLED_STATE
    return features


def _check_subflow_cycles(specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    calls = {n: [(s.subflow, s) for s in sp.states.values() if s.kind == "flow"] for n, sp in specs.items()}

    def visit(n: str, path: list[str]) -> None:
        for sub, st in calls.get(n, ()):
            if sub in path:
                errors.append(FlowError(specs[n].where(st.name), f"sub-flow cycle: {' -> '.join(path + [sub])}"))
            elif sub in calls:
                visit(sub, path + [sub])

    for n in specs:
        visit(n, [n])
    # report each cycle once per starting point is enough; duplicates are harmless


def _compile_flow(spec: FlowSpec, specs: dict[str, FlowSpec], actions: dict[str, Action], env,
                  compile_text, errors: list[FlowError]) -> CompiledFlow | None:
    n_errors = len(errors)
    states = spec.states
    texts: dict[tuple[str, str], Text] = {}
    conditions: dict[tuple[str, int], Callable] = {}
    callables: dict[str, Callable] = {"save": _save}
    transitions: list[dict] = []
    bound_actions: dict[str, Action] = {}
    params: dict[str, dict[str, Any]] = {}

    def err(st: State, msg: str, line: int | None = None) -> None:
        errors.append(FlowError(spec.where(st.name, line), msg))

    def cond(st: State, src: str, line: int) -> Callable | None:
        try:
            return env.compile_expression(src, undefined_to_none=False)
        except Exception as e:  # jinja2.TemplateSyntaxError
            err(st, f"condition {src!r} is not valid: {e}", line)
            return None

    for st in states.values():
        for target, line in st.targets():
            if target not in states:
                err(st, f"unknown target state '{target}'", line)
        if st.text is not None:
            t = compile_text(st.text, spec.where(st.name))
            if t:
                texts[(st.name, "text")] = t
        if st.error is not None:
            t = compile_text(st.error, spec.where(st.name))
            if t:
                texts[(st.name, "error")] = t
        if st.kind in ("do", "flow"):
            params[st.name] = {}
            for k, v in st.params.items():
                if isinstance(v, str) and "{" in v:
                    try:
                        v = render.compile_template(env, v, name=f"{spec.file}:{st.name}:{k}")
                    except render.TemplateError as e:
                        err(st, f"parameter '{k}': {e.message}")
                params[st.name][k] = v
        if st.kind == "menu":
            for i, o in enumerate(st.options, 1):
                t = compile_text(o.label, spec.where(st.name, o.line))
                if t:
                    texts[(st.name, f"opt{i}")] = t
                if o.when:
                    c = cond(st, o.when, o.line)
                    if c:
                        conditions[(st.name, i)] = c
                transitions.append({"trigger": f"opt{i}", "source": st.name, "dest": o.next})
            if st.choose:
                t = compile_text(st.choose.label, spec.where(st.name, st.choose.line))
                if t:
                    texts[(st.name, "choose")] = t
                transitions.append({"trigger": "choose", "source": st.name, "dest": st.choose.next,
                                    "before": "save"})
        elif st.kind == "ask":
            transitions.append({"trigger": "answer", "source": st.name, "dest": st.next, "before": "save"})
        elif st.kind == "do":
            a = actions.get(st.action)
            if a is None:
                err(st, f"unknown action '{st.action}' (known: {', '.join(sorted(actions))})")
            else:
                bound_actions[st.name] = a
                for o in a.outcomes:
                    if o not in st.on:
                        err(st, f"outcome '{o}' of action '{a.name}' has no next state in 'on:'")
                for o in st.on:
                    if o not in a.outcomes:
                        err(st, f"action '{a.name}' has no outcome '{o}' (it has: {', '.join(a.outcomes)})",
                            st.on_lines.get(o))
                for p, required in a.params.items():
                    if required and p not in st.params:
                        err(st, f"action '{a.name}' needs parameter '{p}' in 'with:'")
                for p in st.params:
                    if p not in a.params:
                        err(st, f"action '{a.name}' has no parameter '{p}' (it takes: {', '.join(a.params) or 'none'})")
            for o, target in st.on.items():
                transitions.append({"trigger": o, "source": st.name, "dest": target})
        elif st.kind == "flow":
            sub = specs.get(st.subflow)
            if sub is None:
                err(st, f"unknown flow '{st.subflow}'")
            else:
                outs = sub.outcomes
                for o in outs - set(st.on):
                    err(st, f"outcome '{o}' of flow '{st.subflow}' has no next state in 'on:'")
                for o in set(st.on) - outs:
                    err(st, f"flow '{st.subflow}' never returns '{o}' (it returns: {', '.join(sorted(outs)) or 'nothing'})",
                        st.on_lines.get(o))
            for o, target in st.on.items():
                transitions.append({"trigger": o, "source": st.name, "dest": target})
        elif st.kind == "route":
            for i, c in enumerate(st.routes):
                t = {"trigger": "route", "source": st.name, "dest": c.next}
                if c.when is not None:
                    fn = cond(st, c.when, c.line)
                    if fn:
                        name = f"route:{st.name}:{i}"
                        callables[name] = _route_condition(fn)
                        t["conditions"] = name
                transitions.append(t)

    _check_graph(spec, specs, errors)
    if len(errors) > n_errors:
        return None
    machine = FlowMachine(model=None, states=list(states), initial=spec.start, transitions=transitions,
                          auto_transitions=False, send_event=True, callables=callables, name=spec.name)
    return CompiledFlow(spec, machine, texts, conditions, bound_actions, params)


def _route_condition(expr: Callable) -> Callable:
    def check(event) -> bool:
        return bool(expr(**event.kwargs["ctx"]))
    return check


def _check_graph(spec: FlowSpec, specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    states = spec.states
    edges = {n: [t for t, _ in s.targets() if t in states] for n, s in states.items()}
    # reachable from start
    seen, todo = set(), [spec.start]
    while todo:
        n = todo.pop()
        if n in seen or n not in states:
            continue
        seen.add(n)
        todo.extend(edges[n])
    for n, s in states.items():
        if n not in seen:
            errors.append(FlowError(spec.where(n), f"state '{n}' cannot be reached from the start state '{spec.start}'"))
    # every state can reach a way out (end or return)
    rev: dict[str, list[str]] = {n: [] for n in states}
    for n, ts in edges.items():
        for t in ts:
            rev[t].append(n)
    def exits(s: State) -> bool:
        if s.kind in ("end", "return"):
            return True
        sub = specs.get(s.subflow) if s.kind == "flow" else None
        return bool(sub) and any(x.kind == "end" for x in sub.states.values())

    good, todo = set(), [n for n, s in states.items() if exits(s)]
    while todo:
        n = todo.pop()
        if n in good:
            continue
        good.add(n)
        todo.extend(rev[n])
    for n in states:
        if n not in good and n in seen:
            errors.append(FlowError(spec.where(n), f"dead end: no path from state '{n}' ever reaches an 'end:' or 'return:'"))
    # loops that never wait for input
    auto = {n for n, s in states.items() if not s.waits_for_input}
    colour: dict[str, int] = {}

    def dfs(n: str, path: list[str]) -> None:
        colour[n] = 1
        for t in edges[n]:
            if t not in auto:
                continue
            if colour.get(t) == 1:
                cyc = path[path.index(t):] + [t] if t in path else [n, t]
                errors.append(FlowError(spec.where(t), "loop without input: " + " -> ".join(cyc)))
            elif t not in colour:
                dfs(t, path + [t])
        colour[n] = 2

    for n in auto:
        if n not in colour:
            dfs(n, [n])


class FlowLibrary:
    """The flows being served: the current version plus older ones still in use.

    ``maybe_reload()`` is cheap (a stat per file at most every ``interval``
    seconds). An edited folder goes live only if it passes everything
    ``convo lint`` checks and, with ``run_tests`` (``CONVO_FLOWS_RELOAD_TESTS``),
    its conversation tests (``flows/tests/*.yaml``, run on a snapshot of the
    files in a background thread, against the built-in Fineract simulator).
    Otherwise callers keep the last good version; ``refused`` describes the
    refused version (``/healthz`` shows it), the log says so once per version
    and ``on_refused(refused)`` is called once per version (staff alerts).
    """

    def __init__(self, directory: str | Path, interval: float = 2.0, keep_seconds: float = 900.0,
                 run_tests: bool = False, on_refused: Callable[[dict], None] | None = None):
        self.directory = Path(directory)
        self.interval = interval
        self.keep_seconds = keep_seconds
        self.run_tests = run_tests
        self.on_refused = on_refused
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self.current = load_flowset(self.directory)
        self._versions: dict[str, tuple[FlowSet, float]] = {self.current.version: (self.current, float("inf"))}
        self._next_check = time.monotonic() + interval
        self.last_error: FlowValidationError | None = None
        #: the last refused version: {"version", "errors" (first few, as text), "count", "tests_failed"}
        self.refused: dict | None = None
        #: the version being checked in the background, if any
        self.checking: str | None = None
        self._refused_stamps: dict | None = None
        self._worker: threading.Thread | None = None

    def get(self, version: str) -> FlowSet | None:
        entry = self._versions.get(version)
        return entry[0] if entry else None

    def _stamps(self) -> dict[str, float]:
        out = {}
        for p in self.directory.rglob("*.yaml"):
            rel = p.relative_to(self.directory)
            if "tests" not in rel.parts:
                out[rel.as_posix()] = p.stat().st_mtime_ns
        return out

    def maybe_reload(self, force: bool = False, wait: bool = False) -> bool:
        """Check for edited files; returns True when a new version was installed by this call.

        With ``run_tests`` the check runs in a background thread (a caller's hop never waits
        for it) unless ``wait`` (or ``force``) is given."""
        now = time.monotonic()
        if not force and (self.interval <= 0 or now < self._next_check):
            return False
        with self._lock:
            self._next_check = now + self.interval
            try:
                stamps = self._stamps()
            except OSError as e:
                log.error("cannot read flows: %s", e)
                return False
            if not force and (stamps == self.current.files or stamps == self._refused_stamps):
                return False
            if self._worker is not None and self._worker.is_alive():
                return False
            if self.run_tests and not (force or wait):
                self._worker = threading.Thread(target=self._check_once, args=(stamps, True), daemon=True,
                                                name="flows-reload-check")
                self._worker.start()
                return False
        return self._check_once(stamps, force or wait)

    def _check_once(self, stamps: dict[str, float], block: bool) -> bool:
        """One check at a time: a hop that finds another one running goes on with the current version."""
        if not self._check_lock.acquire(blocking=block):
            return False
        try:
            return self._check(stamps)
        finally:
            self._check_lock.release()

    def _check(self, stamps: dict[str, float]) -> bool:
        """Lint (and test) the folder as it is now; install it or record why it was refused."""
        import shutil
        import tempfile

        try:
            version = _digest(self.directory)[0]
        except OSError as e:
            log.error("cannot read flows: %s", e)
            return False
        if version == self.current.version:
            with self._lock:
                self.current.files.update(stamps)
                self._clear_refusal()
            return False
        self.checking = version
        try:
            with tempfile.TemporaryDirectory(prefix="convo-flows-") as tmp:
                snap = Path(tmp) / self.directory.name       # same name: messages read flows/main.yaml:12
                shutil.copytree(self.directory, snap)
                res = lint_directory(snap)
                failures: list[str] = []
                if not res.errors and self.run_tests and (snap / "tests").is_dir():
                    from convo.devkit.convtest import run_directory

                    failures = [f"{Path(r.file).name}: {r.failure}" for r in run_directory(snap) if r.failure]
        except OSError as e:
            log.error("cannot read flows: %s", e)
            return False
        except Exception as e:  # noqa: BLE001 - whatever goes wrong, callers keep the last good version
            log.exception("checking edited flows failed")
            res, failures = LintResult(None, [], []), [f"the check itself failed: {type(e).__name__}: {e}"]
        finally:
            self.checking = None
        if res.errors or failures:
            self._refuse(version, stamps, res.errors, failures)
            return False
        new = res.flowset
        new.files = dict(stamps)
        now = time.monotonic()
        with self._lock:
            self._clear_refusal()
            if new.version == self.current.version:
                self.current.files.update(new.files)
                return False
            old = self.current
            self._versions[old.version] = (old, now + self.keep_seconds)
            self._versions[new.version] = (new, float("inf"))
            self.current = new
            for v, (_, until) in list(self._versions.items()):
                if until < now:
                    del self._versions[v]
        log.info("flows reloaded: version %s (was %s)", new.version, old.version)
        return True

    def _clear_refusal(self) -> None:
        self.last_error = None
        self.refused = None
        self._refused_stamps = None

    def _refuse(self, version: str, stamps: dict, errors: list[FlowError], failures: list[str]) -> None:
        texts = [str(e) for e in errors] + [f"conversation test failed: {f}" for f in failures]
        first = self.refused is None or self.refused.get("version") != version
        self.refused = {"version": version, "errors": texts[:5], "count": len(texts),
                        "tests_failed": len(failures)}
        self.last_error = FlowValidationError(errors or [FlowError(Where(f"{self.directory.name}/tests", 1), t)
                                                         for t in texts])
        self._refused_stamps = dict(stamps)
        if not first:
            return
        log.error("flow edit refused (version %s), still serving version %s:\n%s", version, self.current.version,
                  "\n".join(texts))
        if self.on_refused is not None:
            try:
                self.on_refused(dict(self.refused))
            except Exception:  # noqa: BLE001 - an alert that fails never stops the service
                log.exception("flows refused: alert failed")
