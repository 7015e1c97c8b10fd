"""Texts: the one sandboxed Jinja environment of flows and notifications (:func:`make_env`, filters
``money``, ``date``, ``day``, ``mask``), and the locale files (:class:`Locales`: flattened YAML keys with the
file:line of each key). Templates and locale tables are built once at load."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox
import yaml

from convo.text.formats import format_date, format_day, format_money, mask


class TemplateError(Exception):
    """A template that does not compile; ``.message``, ``.lineno``, ``.name``."""

    def __init__(self, message: str, lineno: int | None = None, name: str | None = None):
        super().__init__(message)
        self.message = message
        self.lineno = lineno
        self.name = name

    def __str__(self) -> str:
        where = self.name or "<template>"
        if self.lineno:
            where += f":{self.lineno}"
        return f"{where}: {self.message}"


@jinja2.pass_context
def _money_filter(ctx: jinja2.runtime.Context, value: Any, currency: Any = None) -> str:
    return format_money(value, currency, ctx.get("lang", "en"))


@jinja2.pass_context
def _date_filter(ctx: jinja2.runtime.Context, value: Any, style: str = "medium") -> str:
    return format_date(value, style, ctx.get("lang", "en"))


@jinja2.pass_context
def _day_filter(ctx: jinja2.runtime.Context, value: Any, today: Any, style: str = "medium") -> str:
    return format_day(value, today, ctx.get("lang", "en"), style)


class _Env(jinja2.sandbox.ImmutableSandboxedEnvironment):
    def make_globals(self, d):
        """Templates without globals of their own share the environment's ``globals`` dict itself (live,
        as Jinja's ``ChainMap`` over it is): every render copies its template's globals into a new
        context, and copying a dict costs a third of copying a ``ChainMap``."""
        return self.globals if not d else super().make_globals(d)


def make_env() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """Sandboxed Jinja environment for flow and locale texts: StrictUndefined,
    no autoescape, no ``trim_blocks`` (a text reads as written), filters ``money``, ``date``,
    ``day`` (``{{ due.date | day(due.today) }}``: today, tomorrow, on 18 Dec 2026) and ``mask`` (the
    first three format for the context variable ``lang``, default ``"en"``)."""
    env = _Env(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=False,
        keep_trailing_newline=False,
    )
    env.filters["money"] = _money_filter
    env.filters["date"] = _date_filter
    env.filters["day"] = _day_filter
    env.filters["mask"] = mask
    return env


def _template_error(exc: jinja2.TemplateSyntaxError, name: str | None) -> TemplateError:
    return TemplateError(exc.message or str(exc), exc.lineno, name or exc.name)


#: what makes a text a Jinja template (expression, statement, comment)
TEMPLATE_MARKS = ("{{", "{%", "{#")


def is_static(source: str) -> bool:
    """True when ``source`` has no Jinja syntax: Jinja would render it as it is (bar one trailing newline,
    and texts are stripped), so the flows keep the text itself and no hop renders it."""
    return not any(mark in source for mark in TEMPLATE_MARKS)


def compile_template(env: jinja2.Environment, source: str, *, name: str) -> jinja2.Template:
    """Compile ``source`` once (``name`` shows in tracebacks and errors).
    Raises :class:`TemplateError` on syntax errors and unknown filters/tests."""
    key = (source, name)
    code = _CODE.get(key) if isinstance(env, _Env) else None
    if code is None:
        try:
            code = env.compile(source, name=name, filename=name)
        except jinja2.TemplateSyntaxError as exc:
            raise _template_error(exc, name) from None
        if isinstance(env, _Env):
            if len(_CODE) >= _CODE_MAX:
                _CODE.clear()
            _CODE[key] = code
    return env.template_class.from_code(env, code, env.make_globals(None), None)


#: compiled code of the texts, shared by every environment :func:`make_env` makes (they are configured
#: alike; a template's globals and filters are looked up in its own environment when it renders): a
#: reload of the flows compiles only the texts that changed. Failures are never kept.
_CODE: dict[tuple[str, str], Any] = {}
_CODE_MAX = 20_000


def template_variables(env: jinja2.Environment, source: str) -> set[str]:
    """Names a template reads from its context (for lint). Raises :class:`TemplateError`."""
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _template_error(exc, None) from None
    return set(jinja2.meta.find_undeclared_variables(ast))


class LocaleError(Exception):
    """A locale file that cannot be used; ``.message``, ``.file``, ``.line``
    (1-based, None when the problem is the file as a whole)."""

    def __init__(self, message: str, file: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


# ISO 639-1 two-letter codes; three-letter codes (ISO 639-2/3, e.g. "kik",
# "luo") are accepted by shape. An optional region/script: en-KE, pt_BR, sr-Latn.
_ISO639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr
cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu
gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk
kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms
mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro
ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl
tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())
_LANG_RE = re.compile(r"^([a-z]{2,3})(?:[-_](?:[A-Z]{2}|[0-9]{3}|[A-Z][a-z]{3}))?$")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def is_language_code(name: str) -> bool:
    """``en``, ``sw``, ``fr-CI``, ``pt_BR``, ``kik`` yes; ``english``, ``xx``, ``EN`` no."""
    m = _LANG_RE.match(name)
    return m is not None and (len(m.group(1)) == 3 or m.group(1) in _ISO639_1)


def _parse_locale(path: Path, data: bytes) -> dict[str, tuple[str, int]]:
    """Flatten one locale file to ``{key: (text, line)}``."""
    file = str(path)
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError as exc:
        raise LocaleError(f"not UTF-8: {exc}", file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise LocaleError(f"invalid YAML: {problem}", file, mark.line + 1 if mark else None) from None
    out: dict[str, tuple[str, int]] = {}
    if root is None:
        return out
    if not isinstance(root, yaml.MappingNode):
        raise LocaleError("a locale file must be a mapping of keys to texts", file,
                          root.start_mark.line + 1)

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise LocaleError("merge keys (<<) are not supported in locale files", file, line)
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
                raise LocaleError("keys must be plain, non-empty names", file, line)
            key = prefix + str(key_node.value)  # raw text: `no:` is the key "no", not False
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, key + ".")
                continue
            if not isinstance(value_node, yaml.ScalarNode):
                kind = "list" if isinstance(value_node, yaml.SequenceNode) else "non-text value"
                raise LocaleError(f"{key}: text expected, got a {kind}", file,
                                  value_node.start_mark.line + 1)
            if value_node.tag != _STR_TAG:
                kind = value_node.tag.rsplit(":", 1)[-1]
                raise LocaleError(
                    f"{key}: text expected, got {kind} {value_node.value!r} (put it in quotes)",
                    file, value_node.start_mark.line + 1)
            if key in out:
                raise LocaleError(f"{key}: defined twice (first at line {out[key][1]})", file, line)
            out[key] = (value_node.value, line)

    walk(root, "")
    return out


class Locales:
    """Texts per language from ``<dir>/<lang>.yaml``, keys flattened with dots.

    Build with :meth:`load`; every key remembers the file and 1-based line
    that defines it, for lint messages."""

    def __init__(self, tables: dict[str, dict[str, tuple[str, int]]],
                 files: dict[str, str], digest: str):
        self._tables = tables
        self._files = files
        self._digest = digest
        langs = sorted(tables)
        if "en" in langs:
            langs.remove("en")
            langs.insert(0, "en")
        self.languages: tuple[str, ...] = tuple(langs)

    @classmethod
    def load(cls, directory: str | Path, display_root: str | Path | None = None) -> "Locales":
        """Read every ``*.yaml`` / ``*.yml`` in ``directory``. Raises :class:`LocaleError`
        for invalid YAML, non-text values (quote ``Yes``, ``No``, numbers), duplicate
        keys, a file name that is not a language code, or two files for one language.
        Files are named relative to ``display_root`` when given (``flows/locales/fr.yaml``)."""
        directory = Path(directory)

        def shown(p: Path) -> str:
            if display_root is not None:
                try:
                    return p.relative_to(display_root).as_posix()
                except ValueError:
                    pass
            return str(p)

        if not directory.is_dir():
            raise LocaleError("locale directory not found", shown(directory))
        paths = sorted(p for p in directory.iterdir()
                       if p.is_file() and p.suffix in (".yaml", ".yml"))
        tables: dict[str, dict[str, tuple[str, int]]] = {}
        files: dict[str, str] = {}
        digest = hashlib.sha256()
        for path in paths:
            lang = path.stem
            if not is_language_code(lang):
                raise LocaleError(
                    f"file name {path.name!r} is not a language code (e.g. en.yaml, sw.yaml, fr-CI.yaml)",
                    shown(path))
            if lang in tables:
                raise LocaleError(f"language {lang!r} defined twice ({files[lang]})", shown(path))
            data = path.read_bytes()
            digest.update(f"{path.name}\0{len(data)}\0".encode())
            digest.update(data)
            tables[lang] = _parse_locale(Path(shown(path)), data)
            files[lang] = shown(path)
        return cls(tables, files, digest.hexdigest())

    def keys(self, lang: str) -> set[str]:
        """All keys of ``lang`` (empty for an unknown language)."""
        return set(self._tables.get(lang, ()))

    def has(self, lang: str, key: str) -> bool:
        """Whether ``lang`` defines ``key``."""
        return key in self._tables.get(lang, ())

    def source(self, lang: str, key: str) -> str:
        """Template source of ``key`` in ``lang``; KeyError if missing."""
        return self._tables[lang][key][0]

    def where(self, lang: str, key: str) -> tuple[str, int]:
        """``(file, line)`` defining ``key`` in ``lang``; KeyError if missing."""
        return self._files[lang], self._tables[lang][key][1]

    def file(self, lang: str) -> str:
        """Path of the file for ``lang``."""
        return self._files[lang]

    def missing(self) -> list[tuple[str, str, str, int]]:
        """``(missing_lang, key, file, line)`` for every key some language defines
        and another lacks; file:line point at its definition in the first
        language (``en`` first) that has it. Sorted by language, then key."""
        out = []
        all_keys = set().union(*(t.keys() for t in self._tables.values())) if self._tables else set()
        for key in sorted(all_keys):
            owner = next(lang for lang in self.languages if key in self._tables[lang])
            file, line = self.where(owner, key)
            for lang in self.languages:
                if key not in self._tables[lang]:
                    out.append((lang, key, file, line))
        order = {lang: i for i, lang in enumerate(self.languages)}
        out.sort(key=lambda m: (order[m[0]], m[1]))
        return out

    def insertion_line(self, lang: str, key: str, like: str) -> int:
        """Where ``key`` (missing in ``lang``) belongs in ``lang``'s file: the line of the last key
        that comes before it in ``like``'s file and exists in ``lang`` (1 when there is none)."""
        order = sorted(self._tables.get(like, {}).items(), key=lambda kv: kv[1][1])
        line = 1
        for k, _ in order:
            if k == key:
                break
            if k in self._tables.get(lang, {}):
                line = self._tables[lang][k][1]
        return line

    def content_hash(self) -> str:
        """sha256 hex of the files' names and bytes, in name order."""
        return self._digest
