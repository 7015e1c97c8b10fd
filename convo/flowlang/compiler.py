"""Flow specs -> one shared ``transitions`` machine per flow, checked as a whole.

:func:`load_flowset` reads a flows directory (flow files, ``channels.yaml``,
``locales/``), validates everything a product manager can get wrong (targets,
actions and their outcomes, sub-flows, locale keys in every language, template
syntax, reachability, dead ends, loops without input, menu lines that cannot
fit a USSD screen) and compiles it once. Every error names file, line and state.
What each state kind checks and compiles is in its module (:mod:`convo.flowlang.kinds`); the checks
of a flow as a graph or of the whole set, one module each, in :mod:`convo.flowlang.checks`.
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

from convo.actions import Action, load_builtin_actions
from convo.flowlang import checks
from convo.flowlang.checks.variables import channel_roots  # noqa: F401 - its home before convo.flowlang.checks
from convo.flowlang.keywords import KeywordTable, build_table
from convo.flowlang.kinds import kind_of
from convo.flowlang.spec import (
    Clause,
    FlowError,
    FlowSpec,
    FlowValidationError,
    State,
    Where,
    line_of,
    load_yaml,
    parse_flow,
)
from convo.text import templates

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


def _trail(event) -> None:
    """After every state change: note where the conversation went (convo.dialog.stats counts it)."""
    event.model.trail.append((event.model.flow, event.model.state))


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
    if templates.is_static(source):
        return source.strip()
    return templates.compile_template(env, source, name=name)


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
    locales: Any                                     # templates.Locales
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
    stamps: dict[str, float] = {}
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
        locales = templates.Locales.load(directory / "locales", display_root=directory.parent)
    except templates.LocaleError as e:
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

    env = templates.make_env()
    langs = locales.languages
    compiled_locale: dict[tuple[str, str], Any] = {}
    key_usage: dict[str, Where] = {}                 # text key -> first place a flow uses it

    def locale_template(lang: str, key: str, where: Where) -> Any:
        k = (lang, key)
        if k not in compiled_locale:
            file, line = locales.where(lang, key)
            try:
                compiled_locale[k] = _compile(env, locales.source(lang, key), f"{lang}:{key}")
            except templates.TemplateError as e:
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
                except templates.TemplateError as e:
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
        except templates.TemplateError as e:
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
    for check in checks.SPEC_CHECKS:
        check(specs, errors)

    flows: dict[str, CompiledFlow] = {}
    for spec in specs.values():
        cf = _compile_flow(spec, specs, actions, env, compile_text, errors)
        if cf:
            flows[spec.name] = cf
    warnings: list[FlowError] = []
    loaded = checks.Loaded(directory, specs, flows, actions, locales, env, common, channels, keywords, key_usage)
    for check in checks.SET_CHECKS:
        check(loaded, errors, warnings)
    if broken:                                      # a file that does not parse is reported once, not again
        errors = [e for e in errors if e.where.file in broken.values()     # by every file that names it
                  or not any(f"flow '{n}'" in e.message for n in broken)]
    if errors:
        raise FlowValidationError(errors, warnings)
    return FlowSet(version=version, flows=flows, channels=channels, locales=locales, common=common, keywords=keywords,
                   files=stamps, env=env, warnings=warnings)


@dataclass
class LintResult:
    """Everything ``convo lint`` checks: the flows (``load_flowset``) and the notifications (convo.notify.messages)."""

    flowset: FlowSet | None
    errors: list[FlowError]
    warnings: list[FlowError]


def lint_directory(directory: str | Path, actions: dict[str, Action] | None = None) -> LintResult:
    """Load ``directory`` as the service would and run every check of the flows. ``convo lint`` adds the
    notification files' checks (:func:`convo.services.lint_folder`)."""
    try:
        fs = load_flowset(directory, actions)
    except FlowValidationError as e:
        return LintResult(None, list(e.errors), list(e.warnings))
    return LintResult(fs, [], list(fs.warnings))


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


class FlowBuild:
    """One flow being compiled: what a kind's ``compile`` (convo.flowlang.kinds) checks against and adds to."""

    def __init__(self, spec: FlowSpec, specs: dict[str, FlowSpec], actions: dict[str, Action], env,
                 compile_text, errors: list[FlowError]):
        self.spec, self.specs, self.actions, self.env = spec, specs, actions, env
        self.compile_text, self.errors = compile_text, errors
        self.texts: dict[tuple[str, str], Text] = {}
        self.conditions: dict[tuple[str, int], Callable] = {}
        self.callables: dict[str, Callable] = {"save": _save}
        self.transitions: list[dict] = []
        self.bound_actions: dict[str, Action] = {}
        self.param_values: dict[str, dict[str, Any]] = {}

    def err(self, st: State, msg: str, line: int | None = None) -> None:
        self.errors.append(FlowError(self.spec.where(st.name, line), msg))

    def cond(self, st: State, src: str, line: int) -> Callable | None:
        """A ``when:``/``if:`` condition compiled to a callable, or None (error reported)."""
        try:
            return self.env.compile_expression(src, undefined_to_none=False)
        except Exception as e:  # jinja2.TemplateSyntaxError
            self.err(st, f"condition {src!r} is not valid: {e}", line)
            return None

    def text(self, st: State, slot: str, src: Any, line: int | None = None) -> None:
        """Compile a text of ``st`` into ``slot`` (``text``, ``error``, ``opt<i>``, ``choose``)."""
        t = self.compile_text(src, self.spec.where(st.name, line))
        if t:
            self.texts[(st.name, slot)] = t

    def params(self, st: State) -> None:
        """The state's ``with:`` values, templates (``{{ }}``) compiled."""
        out = self.param_values[st.name] = {}
        for k, v in st.params.items():
            if isinstance(v, str) and "{" in v:
                try:
                    v = templates.compile_template(self.env, v, name=f"{self.spec.file}:{st.name}:{k}")
                except templates.TemplateError as e:
                    self.err(st, f"parameter '{k}': {e.message}")
            out[k] = v

    def transition(self, trigger: str, source: str, dest: str, *, before: str | None = None,
                   conditions: str | None = None) -> None:
        t = {"trigger": trigger, "source": source, "dest": dest}
        if before:
            t["before"] = before
        if conditions:
            t["conditions"] = conditions
        self.transitions.append(t)


def _compile_flow(spec: FlowSpec, specs: dict[str, FlowSpec], actions: dict[str, Action], env,
                  compile_text, errors: list[FlowError]) -> CompiledFlow | None:
    n_errors = len(errors)
    states = spec.states
    b = FlowBuild(spec, specs, actions, env, compile_text, errors)
    for st in states.values():
        for target, line in st.targets():
            if target not in states:
                b.err(st, f"unknown target state '{target}'", line)
        if st.text is not None:
            b.text(st, "text", st.text)
        if st.error is not None:
            b.text(st, "error", st.error)
        kind_of(st).compile(st, b)

    for check in checks.FLOW_CHECKS:
        check(spec, specs, errors)
    if len(errors) > n_errors:
        return None
    machine = FlowMachine(model=None, states=list(states), initial=spec.start, transitions=b.transitions,
                          auto_transitions=False, send_event=True, callables={**b.callables, "trail": _trail},
                          after_state_change="trail", name=spec.name)
    return CompiledFlow(spec, machine, b.texts, b.conditions, b.bound_actions, b.param_values)


class FlowLibrary:
    """The flows being served: the current version plus older ones still in use.

    ``maybe_reload()`` is cheap (a stat per file at most every ``interval``
    seconds). An edited folder goes live only if it passes ``lint`` (a
    function of a folder returning a :class:`LintResult`; :func:`lint_directory`
    unless the caller adds more, as :func:`convo.services.build_services` adds the
    notification files' checks) and, when ``tests`` is given
    (``CONVO_FLOWS_RELOAD_TESTS``), ``tests(folder)`` returns no failures (the
    conversation tests, :func:`convo.devkit.convtest.reload_tests`, run on a
    snapshot of the files in a background thread).
    Otherwise callers keep the last good version; ``refused`` describes the
    refused version (``/healthz`` shows it), the log says so once per version
    and ``on_refused(refused)`` is called once per version (staff alerts).
    """

    def __init__(self, directory: str | Path, interval: float = 2.0, keep_seconds: float = 900.0,
                 lint: Callable[[Path], LintResult] | None = None,
                 tests: Callable[[Path], list[str]] | None = None,
                 on_refused: Callable[[dict], None] | None = None):
        self.directory = Path(directory)
        self.interval = interval
        self.keep_seconds = keep_seconds
        self.lint = lint or lint_directory
        self.tests = tests
        self.run_tests = tests is not None
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
        out: dict[str, float] = {}
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
                res = self.lint(snap)
                failures: list[str] = []
                if not res.errors and self.tests is not None and (snap / "tests").is_dir():
                    failures = self.tests(snap)
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
        assert new is not None  # a lint without errors has compiled the flow set
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
